//! The providers behind the sign-in tests (SPEC §14) work on their own: panva's
//! oidc-provider (tests/idp/op.mjs) and the hostile provider (tests/common/oidc.rs) serve
//! discovery and JWKS over HTTPS that verifies under their test CA, and the hostile one
//! runs a whole code flow with PKCE. No gateway is involved: these pass before the
//! gateway side exists.
mod common;

use common::oidc::*;
use common::*;
use serde_json::Value;

fn https(ca_pem: &str) -> reqwest::Client {
    authgate::install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

async fn json(c: &reqwest::Client, url: &str) -> Value {
    let r = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_provider_serves_discovery_and_jwks_through_the_test_ca_and_renders_its_login_page() {
    let op = Op::start(&[OpClient::gateway(free_port())], &test_accounts());
    let c = https(&op.ca_pem);
    let d = json(
        &c,
        &format!("{}/.well-known/openid-configuration", op.issuer),
    )
    .await;
    assert_eq!(d["issuer"], op.issuer.as_str());
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    for k in [
        "authorization_endpoint",
        "token_endpoint",
        "end_session_endpoint",
        "jwks_uri",
    ] {
        assert!(
            d[k].as_str().is_some_and(|u| u.starts_with(&op.issuer)),
            "{k}: {d}"
        );
    }
    assert_eq!(d["backchannel_logout_supported"], true, "{d}");
    let jwks = json(&c, d["jwks_uri"].as_str().unwrap()).await;
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "RSA", "{jwks}");
    assert!(
        k["kid"].is_string() && k["d"].is_null(),
        "public keys only: {jwks}"
    );

    // The authorization endpoint sends a browser to the provider's own login page.
    let client = &op.clients[0];
    let url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email&state=s&nonce=n\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        d["authorization_endpoint"].as_str().unwrap(),
        client.client_id,
        form_urlencoded::byte_serialize(client.redirect_uris[0].as_bytes()).collect::<String>()
    );
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303, "authorize");
    let mut interaction = r.headers()["location"].to_str().unwrap().to_string();
    if interaction.starts_with('/') {
        interaction = format!("{}{interaction}", op.issuer);
    }
    let cookie: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let page = c
        .get(&interaction)
        .header("cookie", cookie.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("name=\"login\"") && html.contains("name=\"password\""),
        "{html}"
    );

    // PKCE is required even for this confidential client.
    let no_pkce = url.split("&code_challenge=").next().unwrap().to_string();
    let r = c.get(&no_pkce).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        loc.as_deref()
            .is_some_and(|l| l.contains("error=invalid_request"))
            || r.status() == 400,
        "no PKCE must be refused: {} {loc:?}",
        r.status()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_provider_runs_a_code_flow_with_pkce_and_signs_verifiable_id_tokens() {
    let port = free_port();
    let op = HostileOp::start(&[redirect_uri(port)], "client_secret_basic");
    let c = https(&op.ca_pem);
    let d = json(
        &c,
        &format!("{}/.well-known/openid-configuration", op.issuer),
    )
    .await;
    assert_eq!(d["issuer"], op.issuer.as_str());
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    let jwks = json(&c, d["jwks_uri"].as_str().unwrap()).await;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    assert_eq!(jwks["keys"][0]["use"], "sig");

    let verifier = "a-verifier-that-is-long-enough-for-rfc-7636-0123456789";
    let challenge = b64(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let authorize = |state: &str| {
        format!(
            "{}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid&state={state}\
             &nonce=n-1&code_challenge={challenge}&code_challenge_method=S256",
            d["authorization_endpoint"].as_str().unwrap(),
            form_urlencoded::byte_serialize(redirect_uri(port).as_bytes()).collect::<String>()
        )
    };
    let code_of = |r: &reqwest::Response| -> (String, String) {
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with(&redirect_uri(port)), "{loc}");
        let q: std::collections::BTreeMap<String, String> =
            form_urlencoded::parse(loc.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(q["state"], "st");
        assert_eq!(q["iss"], op.issuer);
        (q["code"].clone(), loc)
    };
    let r = c.get(authorize("st")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let (code, _) = code_of(&r);
    let exchange = |code: String, v: &'static str| {
        c.post(d["token_endpoint"].as_str().unwrap())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("code_verifier", v),
                        ("redirect_uri", &redirect_uri(port)),
                    ])
                    .finish(),
            )
            .send()
    };
    // A wrong verifier is refused (and uses up the code, as providers do).
    let r = exchange(code, "a-wrong-verifier-that-is-long-enough-0123456789-xyz")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(authorize("st")).send().await.unwrap();
    let (code, _) = code_of(&r);
    let r = exchange(
        code.clone(),
        "a-verifier-that-is-long-enough-for-rfc-7636-0123456789",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let id_token = body["id_token"].as_str().unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[CLIENT_ID]);
    v.set_issuer(&[&op.issuer]);
    let t = jsonwebtoken::decode::<Value>(id_token, &key, &v).expect("a valid ID token");
    assert_eq!(t.claims["nonce"], "n-1");
    assert_eq!(t.claims["email"], "alice@example.com");
    assert_eq!(t.claims["email_verified"], true);
    // The code is single use.
    let r = exchange(
        code,
        "a-verifier-that-is-long-enough-for-rfc-7636-0123456789",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    // A fault applies once: a bad signature does not verify; the next token does.
    for (fault, verifies) in [
        (Some(Fault::BadSignature), false),
        (Some(Fault::ForeignKey), false),
        (None, true),
    ] {
        if let Some(f) = fault.clone() {
            op.fault(f);
        }
        let r = c.get(authorize("st")).send().await.unwrap();
        let (code, _) = code_of(&r);
        let body: Value = exchange(
            code,
            "a-verifier-that-is-long-enough-for-rfc-7636-0123456789",
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let ok =
            jsonwebtoken::decode::<Value>(body["id_token"].as_str().unwrap(), &key, &v).is_ok();
        assert_eq!(ok, verifies, "{fault:?}");
    }
    op.fault(Fault::AuthorizeDenied);
    let r = c.get(authorize("st")).send().await.unwrap();
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("error=access_denied"));

    // A logout token verifies under the published key too.
    let lt = op.logout_token(Some("alice"), Some("sid-1"), serde_json::json!({}));
    let mut v2 = v.clone();
    v2.required_spec_claims.clear();
    assert!(jsonwebtoken::decode::<Value>(&lt, &key, &v2).is_ok());

    // Stopped: connections are refused.
    op.stop();
    assert!(c.get(&op.issuer).send().await.is_err());
}

/// The browser half of tests/oidc_browser.rs, without a gateway: Chromium signs in at
/// oidc-provider through its own login and consent pages and is sent to the registered
/// redirect URI (here the recording upstream) with code, state and iss.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_gets_through_oidc_provider_login_and_consent_to_the_redirect_uri() {
    use common::webdriver::{tools, Browser, Driver};
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let up = Upstream::start();
    let op = Op::start(&[OpClient::gateway(up.addr.port())], &test_accounts());
    let driver = Driver::start(&chromedriver).await;
    let profile = TempDir::new("op-chromium");
    let b = Browser::open(&driver, &chromium, profile.path()).await;
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    b.goto(&format!(
        "{}/auth?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid%20email\
         &state=st-1&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256",
        op.issuer,
        form_urlencoded::byte_serialize(redirect_uri(up.addr.port()).as_bytes())
            .collect::<String>()
    ))
    .await;
    b.wait_url(&format!("{}/interaction/", op.issuer), "Sign-in")
        .await;
    b.fill("input[name=login]", "alice").await;
    b.fill("input[name=password]", "any password").await;
    b.click("button[type=submit]").await;
    b.wait_url(&format!("{}/interaction/", op.issuer), "Continue")
        .await;
    b.click("button[type=submit]").await;
    b.wait_url(&redirect_uri(up.addr.port()), "code=").await;
    let url = b.url().await;
    assert!(url.contains("state=st-1") && url.contains("iss="), "{url}");
    b.close().await;
}
