// A real OIDC provider (oauth2-mock-server, pinned in package.json) for authgate's
// [[issuer]] tests (SPEC §10). Started by tests/issuers.rs:
//   node idp.mjs KEY.pem CERT.pem [PORT]
// It serves discovery and JWKS over HTTPS on 127.0.0.1 (issuer https://localhost:PORT)
// and a plain-HTTP control API on another 127.0.0.1 port for the test:
//   POST /token  {"kid"?, "alg"?, "claims": {...}, "header": {...}}  -> the signed JWT
//   POST /rotate {"alg"}  -> a new key, published in the JWKS          -> {"kid"}
//   GET  /count  -> {"jwks": n, "discovery": n}   (requests seen by the IdP)
// and prints one JSON line {"port", "control", "issuer", "kids": {alg: kid}} when ready.
import { createServer as createHttps } from "node:https";
import { createServer as createHttp } from "node:http";
import { readFileSync } from "node:fs";
import { OAuth2Issuer, OAuth2Service } from "oauth2-mock-server";

const [keyPath, certPath, portArg] = process.argv.slice(2);
const issuer = new OAuth2Issuer();
const service = new OAuth2Service(issuer);
const kids = {};
for (const alg of ["RS256", "PS256", "ES256", "EdDSA"]) {
  kids[alg] = (await issuer.keys.generate(alg)).kid;
}
const counts = { jwks: 0, discovery: 0 };
const app = service.requestHandler;
const idp = createHttps({ key: readFileSync(keyPath), cert: readFileSync(certPath) }, (req, res) => {
  if (req.url.startsWith("/jwks")) counts.jwks++;
  if (req.url.startsWith("/.well-known/openid-configuration")) counts.discovery++;
  app(req, res);
});

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
    let out;
    if (req.method === "POST" && req.url === "/token") {
      const b = await body(req);
      const kid = b.kid ?? kids[b.alg ?? "RS256"];
      out = {
        token: await issuer.buildToken({
          kid,
          expiresIn: b.expiresIn ?? 600,
          scopesOrTransform: (header, payload) => {
            Object.assign(payload, b.claims ?? {});
            Object.assign(header, b.header ?? {});
          },
        }),
      };
    } else if (req.method === "POST" && req.url === "/rotate") {
      const b = await body(req);
      const jwk = await issuer.keys.generate(b.alg ?? "RS256");
      kids[b.alg ?? "RS256"] = jwk.kid;
      out = { kid: jwk.kid };
    } else if (req.method === "GET" && req.url === "/count") {
      out = counts;
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(out));
  } catch (e) {
    res.writeHead(500, { "content-type": "text/plain" }).end(String(e));
  }
});

idp.listen(Number(portArg ?? 0), "127.0.0.1", () => {
  const port = idp.address().port;
  issuer.url = `https://localhost:${port}`;
  control.listen(0, "127.0.0.1", () => {
    console.log(JSON.stringify({ port, control: control.address().port, issuer: issuer.url, kids }));
  });
});
