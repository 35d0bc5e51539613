// Tells the console the browser's time zone once, so times show in it.
const meta = document.querySelector('meta[name="csrf"]');
const known = document.body.dataset.tzKnown === "1";
// Once per tab session: a browser that refuses the cookie must not reload for ever.
if (meta && !known && !sessionStorage.getItem("mrTzSent")) {
  sessionStorage.setItem("mrTzSent", "1");
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (zone) {
    const body = new URLSearchParams({ tz: zone, _csrf: meta.content });
    fetch("/session/tz", { method: "POST", body, credentials: "same-origin" })
      .then((r) => { if (r.ok && zone !== "UTC") location.reload(); })
      .catch(() => {});
  }
}
