//! The README's flow, end to end: register → login → /protected.
mod common;
use common::*;

#[tokio::test]
async fn register_login_and_reach_a_protected_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let (token, _) = token_for(&gw, "Alice").await;
    let r = client()
        .get(gw.url("/protected/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/protected/x");
    assert_eq!(seen.header("x-user").as_deref(), Some("alice"));
    assert!(seen.header("x-request-id").is_some());
    let r = client().get(gw.url("/protected")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"authgate\"");
}
