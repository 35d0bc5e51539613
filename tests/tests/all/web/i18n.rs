//! The console's language: from the browser's `Accept-Language`, and the switch in the header
//! that overrides it for good.

use mailroom_tests::browser::{Browser, BrowserOptions};

use super::spawn_web;

#[tokio::test]
async fn russian_from_accept_language_and_the_switch() {
    let app = spawn_web().await;
    let b = Browser::start_with(BrowserOptions {
        lang: Some("ru-RU"),
        ..BrowserOptions::default()
    })
    .await;

    b.goto(&app, "/sign-in").await;
    assert_eq!(
        b.text("h1").await,
        "Вход",
        "a Russian browser gets Russian pages"
    );
    assert_eq!(
        b.find("html")
            .await
            .attr("lang")
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some("ru")
    );
    b.screenshot("sign-in-ru").await;

    b.select("Язык", "English").await;
    b.click_button("Сменить").await;
    b.wait_for_text("Login email").await;
    assert_eq!(b.text("h1").await, "Sign in");
    assert!(
        b.url().await.path().starts_with("/sign-in"),
        "the switch stays on the page"
    );
    b.screenshot("sign-in-en").await;

    // The choice sticks over the browser's language, on this page and others.
    b.goto(&app, "/reset-password/request").await;
    assert!(
        !b.body_text().await.contains("Язык"),
        "after choosing English, other pages are English too"
    );
    b.goto(&app, "/sign-in").await;
    assert_eq!(b.text("h1").await, "Sign in");
    b.close().await;
}
