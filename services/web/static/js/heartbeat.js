// An open, visible console tab is an activity signal: the person's mail syncs at the active
// tier while they look at it (RecordActivity through POST /activity).
const every = Number(document.body.dataset.heartbeat || 0) * 1000;
const meta = document.querySelector('meta[name="csrf"]');
let last = 0;
async function beat() {
  if (!every || !meta || document.visibilityState !== "visible") return;
  const now = Date.now();
  if (now - last < every - 1000) return;
  last = now;
  try {
    const r = await fetch("/activity", {
      method: "POST",
      headers: { "x-csrf-token": meta.content },
      credentials: "same-origin",
    });
    if (r.status === 401) location.assign("/sign-in?ended=1&next=" + encodeURIComponent(location.pathname + location.search));
  } catch (_) { /* offline: try at the next beat */ }
}
if (every) {
  beat();
  setInterval(beat, every);
  document.addEventListener("visibilitychange", beat);
}
