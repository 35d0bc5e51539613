//! A real browser for the web console's tests: headless Chromium driven over WebDriver.
//!
//! One `chromedriver` runs per test process (started on first use on a free loopback port,
//! stopped by its pid when the process exits), and every [`Browser::start`] opens a WebDriver
//! session of its own (its own profile directory, so its own cookies). Chromium and the driver
//! are Debian's (`MAILROOM_CHROMIUM`, `MAILROOM_CHROMEDRIVER`, exported by `.ci/stack.sh`, which
//! also installs axe-core for [`Browser::axe`] at `MAILROOM_AXE_JS`).
//!
//! The helpers find things as a person does: fields by the text of their `<label>`, buttons and
//! links by their visible text. Everything that fails panics with what was looked for and where
//! (these are tests). Screenshots and axe reports go to
//! `target/web-screenshots/<test name>/NN-<name>.png`.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::{free_port, TestApp};

/// How long [`Browser::wait_for`] and friends wait.
const WAIT: Duration = Duration::from_secs(10);

/// The chromedriver of this test process.
struct Driver {
    port: u16,
}

static DRIVER: OnceCell<Driver> = OnceCell::const_new();
/// The driver's pid, killed at exit.
static DRIVER_PID: Mutex<Option<u32>> = Mutex::new(None);
/// Sessions not yet closed (`(driver port, session id)`), deleted at exit.
static SESSIONS: Mutex<Vec<(u16, String)>> = Mutex::new(Vec::new());

extern "C" fn stop_driver_at_exit() {
    let sessions = SESSIONS
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    for (port, id) in sessions {
        delete_session_blocking(port, &id);
    }
    if let Ok(pid) = DRIVER_PID.lock() {
        if let Some(pid) = *pid {
            // SAFETY: kill(2) on the pid of the child this process started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
}

fn env_path(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

async fn driver() -> &'static Driver {
    DRIVER
        .get_or_init(|| async {
            let bin = env_path("MAILROOM_CHROMEDRIVER", "/usr/bin/chromedriver");
            // SAFETY: registering a plain extern "C" function without captured state.
            unsafe {
                libc::atexit(stop_driver_at_exit);
            }
            let mut last = String::new();
            for _ in 0..3 {
                let port = free_port();
                let log = std::env::temp_dir().join(format!("mailroom-chromedriver-{port}.log"));
                let child: Child = Command::new(&bin)
                    .arg(format!("--port={port}"))
                    .arg(format!("--log-path={}", log.display()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("cannot start {bin} (install Debian's chromium-driver; `source .ci/stack.sh && stack_up` does): {e}")
                    });
                let pid = child.id();
                // The child is stopped by its pid at exit, not by dropping this handle.
                std::mem::forget(child);
                if let Ok(mut slot) = DRIVER_PID.lock() {
                    *slot = Some(pid);
                }
                let deadline = Instant::now() + WAIT;
                while Instant::now() < deadline {
                    if port_open(port) {
                        return Driver { port };
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // SAFETY: kill(2) on our own child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
                last = format!("chromedriver did not open port {port} within 10 s; see {}", log.display());
            }
            panic!("{last}")
        })
        .await
}

/// Deletes a WebDriver session without a runtime (from `Drop` and at exit): one HTTP/1.1
/// request over a plain socket, best effort.
fn delete_session_blocking(port: u16, id: &str) {
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
}

/// How a [`Browser`] is set up.
#[derive(Debug, Clone, Copy)]
pub struct BrowserOptions<'a> {
    /// The browser's language (`Accept-Language`), e.g. `Some("ru-RU")`; default en-US.
    pub lang: Option<&'a str>,
    /// Whether pages may run JavaScript (off: the no-JS path of every core flow).
    pub javascript: bool,
}

impl Default for BrowserOptions<'_> {
    fn default() -> Self {
        Self {
            lang: None,
            javascript: true,
        }
    }
}

/// One browser window (a WebDriver session with a profile of its own).
pub struct Browser {
    client: Option<Client>,
    port: u16,
    session: String,
    profile: PathBuf,
    shots: AtomicU32,
}

/// The running test's name: nextest runs one test per process, named after `--exact`; the
/// test thread's name otherwise.
fn test_name() -> String {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--exact") {
        if let Some(name) = args.get(i + 1) {
            return name.clone();
        }
    }
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio") => name.to_owned(),
        _ => args
            .iter()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .cloned()
            .unwrap_or_else(|| "unnamed".into()),
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("target"))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A string as an XPath literal (XPath 1.0 has no escapes: `concat` around quotes).
fn xpath_literal(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else if !s.contains('"') {
        format!("\"{s}\"")
    } else {
        let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

impl Browser {
    /// A browser in English with JavaScript on.
    pub async fn start() -> Self {
        Self::start_with(BrowserOptions::default()).await
    }

    pub async fn start_with(options: BrowserOptions<'_>) -> Self {
        let driver = driver().await;
        let profile = std::env::temp_dir().join(format!(
            "mailroom-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", profile.display()));
        let lang = options.lang.unwrap_or("en-US");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--lang={lang}"),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
        ];
        // SAFETY: getuid(2) has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            args.push("--no-sandbox".to_owned());
        }
        let primary = lang.split('-').next().unwrap_or(lang);
        let mut prefs = json!({ "intl.accept_languages": format!("{lang},{primary}") });
        if !options.javascript {
            prefs["profile.managed_default_content_settings.javascript"] = json!(2);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": env_path("MAILROOM_CHROMIUM", "/usr/bin/chromium"),
                "args": args,
                "prefs": prefs,
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| panic!("chromedriver did not open a Chromium session: {e}"));
        let session = client.session_id().await.ok().flatten().unwrap_or_default();
        if let Ok(mut sessions) = SESSIONS.lock() {
            sessions.push((driver.port, session.clone()));
        }
        Self {
            client: Some(client),
            port: driver.port,
            session,
            profile,
            shots: AtomicU32::new(0),
        }
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is open")
    }

    /// Opens `path` (e.g. `/sign-in`) on the app's console.
    pub async fn goto(&self, app: &TestApp, path: &str) {
        let url = format!("{}{path}", app.web_url());
        self.client()
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Opens an absolute URL (a mailed link).
    pub async fn goto_url(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The address the browser shows.
    pub async fn url(&self) -> url::Url {
        self.client()
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("no current URL: {e}"))
    }

    /// The path (and query) the browser shows, e.g. `/sign-in?next=%2F`.
    pub async fn path(&self) -> String {
        let url = self.url().await;
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The element `css`, waiting for it up to 10 s.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(found) => found,
            Err(e) => panic!(
                "no element `{css}` within 10 s: {e}\n{}",
                self.where_we_are().await
            ),
        }
    }

    async fn find_xpath(&self, xpath: &str, what: &str) -> fantoccini::elements::Element {
        match self
            .client()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(found) => found,
            Err(e) => panic!("no {what} within 10 s: {e}\n{}", self.where_we_are().await),
        }
    }

    /// For a failure's message: the page's address and the start of its text (an error page
    /// says what went wrong, which CI's log would otherwise not show), invitation, reset and
    /// registration tokens masked.
    async fn where_we_are(&self) -> String {
        let url = match self.client().current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(no address: {e}; session {})", self.session),
        };
        let text: String = self.body_text().await.chars().take(600).collect();
        format!(
            "on {}, which reads:\n{}",
            mask_tokens(&url),
            mask_tokens(&text)
        )
    }

    /// The form control whose `<label>` reads `label` (the label's `for` names its id): a
    /// field without a label is not found, so tests prove labels exist.
    async fn control(&self, label: &str) -> fantoccini::elements::Element {
        let lit = xpath_literal(label);
        let xpath =
            format!("//label[normalize-space(.)={lit} or normalize-space(text())={lit}][@for]");
        let label_el = self
            .find_xpath(&xpath, &format!("<label for> reading {label:?}"))
            .await;
        let id = label_el
            .attr("for")
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the label {label:?} has no `for`"));
        let found = self
            .client()
            .find(Locator::XPath(&format!("//*[@id={}]", xpath_literal(&id))))
            .await;
        found.unwrap_or_else(|e| panic!("the label {label:?} is for #{id}, which is missing: {e}"))
    }

    /// Types `value` into the field labelled `label` (clearing it first).
    pub async fn fill(&self, label: &str, value: &str) {
        let field = self.control(label).await;
        let _ = field.clear().await;
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("cannot type into the field {label:?}: {e}"));
    }

    /// Picks the option reading `option` in the select labelled `label`.
    pub async fn select(&self, label: &str, option: &str) {
        let field = self.control(label).await;
        field
            .select_by_label(option)
            .await
            .unwrap_or_else(|e| panic!("the select {label:?} has no option {option:?}: {e}"));
    }

    /// Ticks the checkbox (or radio) labelled `label`, if not ticked yet.
    pub async fn check(&self, label: &str) {
        let field = self.control(label).await;
        if !field.is_selected().await.unwrap_or(false) {
            field
                .click()
                .await
                .unwrap_or_else(|e| panic!("cannot tick {label:?}: {e}"));
        }
    }

    /// Unticks the checkbox labelled `label`, if ticked.
    pub async fn uncheck(&self, label: &str) {
        let field = self.control(label).await;
        if field.is_selected().await.unwrap_or(false) {
            field
                .click()
                .await
                .unwrap_or_else(|e| panic!("cannot untick {label:?}: {e}"));
        }
    }

    /// Clicks the button (`<button>` or `<input type=submit>`) reading `text`.
    pub async fn click_button(&self, text: &str) {
        let lit = xpath_literal(text);
        let xpath = format!(
            "//button[normalize-space(.)={lit}] | //input[(@type='submit' or @type='button') and normalize-space(@value)={lit}]"
        );
        let button = self
            .find_xpath(&xpath, &format!("button reading {text:?}"))
            .await;
        button
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click the button {text:?}: {e}"));
    }

    /// Clicks the link reading `text`.
    pub async fn click_link(&self, text: &str) {
        let lit = xpath_literal(text);
        let xpath = format!("//a[normalize-space(.)={lit}]");
        let link = self
            .find_xpath(&xpath, &format!("link reading {text:?}"))
            .await;
        link.click()
            .await
            .unwrap_or_else(|e| panic!("cannot click the link {text:?}: {e}"));
    }

    /// The visible text of the first element `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("no text of `{css}`: {e}"))
    }

    /// The visible texts of every element `css` (none: empty, without waiting).
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("cannot look for `{css}`: {e}"));
        let mut texts = Vec::with_capacity(found.len());
        for el in found {
            texts.push(el.text().await.unwrap_or_default());
        }
        texts
    }

    /// Whether an element `css` is on the page now (without waiting).
    pub async fn exists(&self, css: &str) -> bool {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .map(|all| !all.is_empty())
            .unwrap_or(false)
    }

    /// Waits (≤ 10 s) for an element `css`.
    pub async fn wait_for(&self, css: &str) {
        self.find(css).await;
    }

    /// Waits (≤ 10 s) until the page's visible text contains `text`.
    pub async fn wait_for_text(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        let mut body = String::new();
        while Instant::now() < deadline {
            body = self.body_text().await;
            if body.contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.url().await;
        panic!("{text:?} did not appear on {url} within 10 s; the page reads:\n{body}");
    }

    /// The page's visible text.
    pub async fn body_text(&self) -> String {
        match self.client().find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.client()
            .source()
            .await
            .unwrap_or_else(|e| panic!("no page source: {e}"))
    }

    /// Signs in through the `/sign-in` page and waits to leave it.
    pub async fn sign_in(&self, app: &TestApp, email: &str, password: &str) {
        self.goto(app, "/sign-in").await;
        self.sign_in_here(email, password).await;
    }

    /// Fills the sign-in form already shown (e.g. after a redirect) and waits to leave it.
    pub async fn sign_in_here(&self, email: &str, password: &str) {
        let email_field = self
            .find("form input[type=email], form input[name=email]")
            .await;
        let _ = email_field.clear().await;
        email_field
            .send_keys(email)
            .await
            .unwrap_or_else(|e| panic!("cannot type the address: {e}"));
        let password_field = self.find("form input[type=password]").await;
        password_field
            .send_keys(password)
            .await
            .unwrap_or_else(|e| panic!("cannot type the password: {e}"));
        // The sign-in form is the one holding the password field.
        let form = password_field
            .find(Locator::XPath("ancestor::form"))
            .await
            .unwrap_or_else(|e| panic!("the password field is in no form: {e}"));
        let submit = form
            .find(Locator::Css(
                "button[type=submit], input[type=submit], button:not([type])",
            ))
            .await
            .unwrap_or_else(|e| panic!("the sign-in form has no submit button: {e}"));
        submit
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot submit the sign-in form: {e}"));
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if !self.url().await.path().starts_with("/sign-in") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = self.body_text().await;
        panic!("signing in as {email} stayed on /sign-in; the page reads:\n{body}");
    }

    /// This test's directory for screenshots and reports.
    fn shots_dir(&self) -> PathBuf {
        let name = test_name().replace("::", "-");
        let dir = target_dir().join("web-screenshots").join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }

    fn next_file(&self, name: &str, ext: &str) -> PathBuf {
        let n = self.shots.fetch_add(1, Ordering::Relaxed) + 1;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        self.shots_dir().join(format!("{n:02}-{safe}.{ext}"))
    }

    /// Saves a screenshot as `target/web-screenshots/<test>/NN-<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("cannot take the screenshot {name:?}: {e}"));
        let path = self.next_file(name, "png");
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Runs axe-core on the page, saves its JSON report next to the screenshots, and panics
    /// listing every serious or critical violation.
    pub async fn axe(&self) {
        let (report, file) = self.axe_report().await;
        let mut bad = Vec::new();
        for v in report["violations"].as_array().into_iter().flatten() {
            let impact = v["impact"].as_str().unwrap_or("");
            if impact == "serious" || impact == "critical" {
                let targets: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n["target"].to_string())
                    .collect();
                bad.push(format!(
                    "- [{impact}] {}: {} ({})\n    at {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["help"].as_str().unwrap_or(""),
                    v["helpUrl"].as_str().unwrap_or(""),
                    targets.join(", ")
                ));
            }
        }
        if !bad.is_empty() {
            let url = report["url"].as_str().unwrap_or("?");
            panic!(
                "axe found {} serious/critical violation(s) on {url} (report: {}):\n{}",
                bad.len(),
                file.display(),
                bad.join("\n")
            );
        }
    }

    /// The ids and impacts of every axe violation on the page (its report saved as by
    /// [`Browser::axe`]), for tests that expect some.
    pub async fn axe_violations(&self) -> Vec<(String, String)> {
        let (report, _) = self.axe_report().await;
        report["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["id"].as_str().unwrap_or("?").to_owned(),
                    v["impact"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Runs axe-core (injected from `MAILROOM_AXE_JS`) and saves its report; returns it and
    /// where it was saved.
    async fn axe_report(&self) -> (Value, PathBuf) {
        let path = std::env::var("MAILROOM_AXE_JS").unwrap_or_else(|_| {
            panic!("MAILROOM_AXE_JS is not set: run the tests after `source .ci/stack.sh && stack_up`, which installs axe-core")
        });
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read axe-core at {path}: {e}"));
        // Injected through WebDriver (not a <script> tag), so the page's CSP does not apply.
        self.client()
            .execute(&format!("{source}\n;return typeof axe;"), vec![])
            .await
            .unwrap_or_else(|e| panic!("cannot inject axe-core: {e}"));
        let script = r#"
            const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ['violations'] })
              .then(r => done(JSON.stringify({ url: r.url, violations: r.violations })))
              .catch(e => done(JSON.stringify({ error: String(e) })));
        "#;
        let result = self
            .client()
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("axe.run failed: {e}"));
        let text = result.as_str().unwrap_or("{}").to_owned();
        let report: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("axe's report is not JSON: {e}"));
        let file = self.next_file("axe", "json");
        let pretty = serde_json::to_string_pretty(&report).unwrap_or(text);
        std::fs::write(&file, pretty)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        if let Some(err) = report.get("error") {
            panic!("axe.run failed: {err}");
        }
        (report, file)
    }

    /// Ends the session (and its Chromium).
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
            self.forget_session();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    fn forget_session(&self) {
        if let Ok(mut sessions) = SESSIONS.lock() {
            sessions.retain(|(_, id)| id != &self.session);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.client.take().is_some() {
            // No runtime to await in: delete the session over a plain socket.
            delete_session_blocking(self.port, &self.session);
            self.forget_session();
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// `text` with the value of every `token=` and `link=` (a mailed link's secret, as a URL or
/// the page shows it) replaced by `…`, for messages that reach CI's log.
fn mask_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["token=", "link="]
        .iter()
        .filter_map(|key| rest.find(key).map(|i| i + key.len()))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push('…');
        let end = rest[at..]
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"' || c == '<')
            .map_or(rest.len(), |i| at + i);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::mask_tokens;

    #[test]
    fn a_failures_message_shows_no_mailed_token() {
        assert_eq!(
            mask_tokens("http://127.0.0.1:1/invite?token=s3cr3t&lang=ru"),
            "http://127.0.0.1:1/invite?token=…&lang=ru"
        );
        assert_eq!(
            mask_tokens("Link: http://h/join?link=abc.def\nCopy it"),
            "Link: http://h/join?link=…\nCopy it"
        );
        assert_eq!(
            mask_tokens("reset?token=a and invite?token=b"),
            "reset?token=… and invite?token=…"
        );
        assert_eq!(mask_tokens("no secret here"), "no secret here");
    }
}
