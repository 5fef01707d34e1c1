// A real, certified OpenID Provider (panva's oidc-provider, pinned in package.json) for
// authgate's sign-in tests (SPEC §14). Started by tests/common/oidc.rs:
//   node op.mjs CONFIG.json
// CONFIG.json:
//   { "key": "key.pem", "cert": "cert.pem", "port": 0,
//     "clients": [{ "client_id", "client_secret", "redirect_uris": [...],
//                   "post_logout_redirect_uris": [...], "backchannel_logout_uri"?,
//                   "token_endpoint_auth_method": "client_secret_basic" | "client_secret_post" }],
//     "accounts": { "alice": { "email", "email_verified", "groups" }, ... } }
// The login name is the account id and so the `sub` of its tokens (oidc-provider uses
// the account id as `sub`).
// It serves the provider over HTTPS on 127.0.0.1 (issuer https://localhost:PORT) with the
// test CA's certificate, its own login and consent pages (devInteractions: any password,
// the login name picks the account), RP-initiated and back-channel logout, PKCE S256
// required, and the RFC 9207 `iss` authorization response parameter. A plain-HTTP control
// API on another 127.0.0.1 port lets a test act as the provider's admin:
//   POST /backchannel {"client_id", "sub", "sid"?} -> the provider sends a logout_token
// It prints one JSON line {"issuer", "port", "control"} when ready.
import { createServer as createHttps } from "node:https";
import { createServer as createHttp } from "node:http";
import { readFileSync } from "node:fs";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import Provider from "oidc-provider";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const accounts = cfg.accounts ?? {};

// One RS256 signing key per run: no development keys, and nothing on disk.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: randomBytes(8).toString("hex"), alg: "RS256", use: "sig" };

const server = createHttps({ key: readFileSync(cfg.key), cert: readFileSync(cfg.cert) });
await new Promise((resolve) => server.listen(Number(cfg.port ?? 0), "127.0.0.1", resolve));
const port = server.address().port;
const issuer = `https://localhost:${port}`;

const provider = new Provider(issuer, {
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    // "web" accepts http:// loopback redirect URIs for the code flow (only implicit
    // forces https); the gateway under test listens on plain http on 127.0.0.1.
    application_type: "web",
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? "client_secret_basic",
    id_token_signed_response_alg: "RS256",
    ...(c.backchannel_logout_uri
      ? { backchannel_logout_uri: c.backchannel_logout_uri, backchannel_logout_session_required: true }
      : {}),
  })),
  jwks: { keys: [jwk] },
  // oidc-provider's outgoing requests (the back-channel logout POST) refuse special-use
  // addresses such as 127.0.0.1 (SSRF protection); the gateway under test listens only
  // there, so this test provider sends without that guard.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  // Explicit lifetimes (the defaults print a notice on first use).
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 3600, IdToken: 3600, AuthorizationCode: 60 },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  // PKCE for every client, confidential ones included (SPEC §14: the gateway always sends S256).
  pkce: { required: () => true },
  // The ID token from the token endpoint carries the user's claims itself (not only
  // `sub`), so a relying party needs no userinfo call to read email and groups.
  conformIdTokenClaims: false,
  claims: {
    openid: ["sub", "groups"],
    email: ["email", "email_verified"],
    profile: ["name"],
  },
  scopes: ["openid", "email", "profile", "offline_access"],
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    claimsParameter: { enabled: false },
    introspection: { enabled: false },
    revocation: { enabled: false },
  },
  async findAccount(_ctx, id) {
    const a = accounts[id];
    if (!a) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: a.email,
          email_verified: a.email_verified ?? false,
          groups: a.groups ?? [],
          name: a.name ?? id,
        };
      },
    };
  },
  // devInteractions takes any login name: one that names no configured account is
  // refused at the token endpoint by findAccount; keep logs quiet otherwise.
  renderError(ctx, out) {
    ctx.type = "html";
    ctx.body = `<!DOCTYPE html><title>oops</title><pre>${JSON.stringify(out)}</pre>`;
  },
});
provider.on("server_error", (_ctx, err) => console.error("op server_error", err));
provider.on("backchannel.error", (_client, err) => console.error("op backchannel.error", err.message));
provider.on("backchannel.success", (client) => console.error("op backchannel.success", client.clientId));

server.on("request", provider.callback());

function body(req) {
  return new Promise((resolve, reject) => {
    let data = "";
    req.on("data", (c) => (data += c));
    req.on("end", () => {
      try {
        resolve(data ? JSON.parse(data) : {});
      } catch (e) {
        reject(e);
      }
    });
  });
}

const control = createHttp(async (req, res) => {
  try {
    if (req.method === "POST" && req.url === "/backchannel") {
      const b = await body(req);
      const client = await provider.Client.find(b.client_id);
      if (!client) throw new Error(`no client ${b.client_id}`);
      await client.backchannelLogout(b.sub, b.sid);
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
      return;
    }
    res.writeHead(404).end();
  } catch (e) {
    res.writeHead(500, { "content-type": "text/plain" }).end(String(e?.message ?? e));
  }
});
control.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ issuer, port, control: control.address().port }));
});
