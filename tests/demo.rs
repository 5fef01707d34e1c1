//! `authgate demo`: the README's first command — gateway plus the bundled example backend.
mod common;
use common::*;

#[tokio::test]
async fn demo_serves_the_whole_register_login_protected_flow() {
    // The demo backend binds the first upstream target's address: give it a free port.
    let backend = dead_addr();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let config = shipped
        .replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace("http://127.0.0.1:9000", &format!("http://{backend}"));
    assert_ne!(config, shipped, "the shipped gateway.toml changed shape");
    let gw = Gateway::start_in(TempDir::new("demo"), &config, &[], "demo").unwrap();
    assert!(
        gw.logs()
            .contains(&format!("demo backend listening on {backend}")),
        "{}",
        gw.logs()
    );

    let (token, _) = token_for(&gw, "alice").await;
    let r = client()
        .get(gw.url("/protected"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Hello, alice! This is a protected resource.");
    let r = client().get(gw.url("/protected")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().get(gw.url("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The backend trusts X-User only because the gateway strips it: a spoofed one is gone.
    let r = client()
        .get(gw.url("/protected"))
        .header("X-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
