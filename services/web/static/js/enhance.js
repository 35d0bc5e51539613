// In-place updates without a framework. A form or link with data-swap="ID" is fetched with
// the header x-fragment: ID; the server renders only that element, which replaces #ID. Any
// failure falls back to ordinary navigation, so every page works without this file.
const live = document.getElementById("live");
function announce(text) { if (live) live.textContent = text; }
// Fetches url and swaps #target. A response that carries no such fragment (an error page,
// a redirect to sign-in) replaces the whole page instead, so nothing is ever sent twice.
async function swap(url, target, init, state) {
  const res = await fetch(url, { ...init, headers: { ...(init && init.headers), "x-fragment": target }, credentials: "same-origin" });
  if (state) state.sent = true;
  const html = await res.text();
  const doc = new DOMParser().parseFromString(html, "text/html");
  const fresh = doc.getElementById(target);
  const old = document.getElementById(target);
  if (!res.ok || !fresh || !old) {
    document.title = doc.title;
    document.body.replaceWith(doc.body);
    history.pushState(null, "", res.url);
    return res;
  }
  old.replaceWith(fresh);
  const heading = fresh.querySelector("h1,h2,caption");
  announce(heading ? heading.textContent.trim() : "");
  return res;
}
document.addEventListener("click", async (e) => {
  const a = e.target.closest("a[data-swap]");
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  try { await swap(a.href, a.dataset.swap); history.replaceState(null, "", a.href); }
  catch (_) { location.assign(a.href); }
});
document.addEventListener("submit", async (e) => {
  const form = e.target.closest("form[data-swap]");
  if (!form) return;
  e.preventDefault();
  const data = new FormData(form, e.submitter);
  const method = (form.method || "get").toLowerCase();
  const state = { sent: false };
  try {
    if (method === "get") {
      const url = new URL(form.action, location.href);
      url.search = new URLSearchParams(data).toString();
      await swap(url.href, form.dataset.swap, undefined, state);
      history.replaceState(null, "", url.href);
    } else {
      const meta = document.querySelector('meta[name="csrf"]');
      await swap(form.action, form.dataset.swap, { method: "POST", body: new URLSearchParams(data), headers: { "x-csrf-token": meta ? meta.content : "" } }, state);
    }
  } catch (_) {
    if (state.sent) {
      // The server has the post: never send it again; show where things stand.
      location.reload();
      return;
    }
    // Nothing reached the server: submit normally.
    form.removeAttribute("data-swap");
    form.requestSubmit(e.submitter);
  }
});
