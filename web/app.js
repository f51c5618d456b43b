// The text-to-video page: loads the choices from the API, renders through a job
// (POST /api/jobs, progress over SSE, Cancel = DELETE), then shows and offers the MP4.
"use strict";

const $ = (id) => document.getElementById(id);
const t = (key, params) => window.i18n.t(key, params);
let videoUrl = null;
let currentJob = null; // {id, source}: the render in progress, for Cancel

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

// The server answers errors as JSON {"error": "..."}; show that message, whatever else comes.
async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

let voice = null; // Engines.voicePicker over the language, voice and speed fields

// The TTS language matching the interface language when the server has it, else its default.
function preferredLanguage(languages) {
  const ui = window.i18n.lang;
  return languages.languages.some((l) => l.code === ui) ? ui : languages.default;
}

async function loadChoices() {
  const [languages, engines, avatars, voiceList] = await Promise.all([
    getJson("/api/languages"), getJson("/api/engines"), getJson("/api/avatars"),
    getJson("/api/voices"),
  ]);
  voice = Engines.voicePicker($("language"), $("voice"), $("voice-label"), $("speed"));
  $("text").maxLength = languages.max_text_chars;
  $("char-limit").textContent = languages.max_text_chars;
  Engines.fillSelect($("language"), languages.languages.map((l) => ({ value: l.code, label: `${l.name} (${l.code})` })),
    preferredLanguage(languages));
  voice.load(voiceList.voices);
  if (window.mountAvatarUpload) window.mountAvatarUpload($("generate-form"), $("avatar"));
  Engines.fillSelect($("engine"), Engines.engineOptions(engines.engines),
    Engines.pickEngine(engines.engines, engines.default));
  Engines.fillSelect($("avatar"), avatars.avatars.map((a) => ({ value: a.name, label: Engines.avatarLabel(a) })),
    avatars.default);
  const note = $("engine-note");
  note.textContent = Engines.unavailableNote(engines.engines);
  note.hidden = !note.textContent;
}

function seconds(value) {
  return value == null ? "–" : `${Number(value).toFixed(2)} s`;
}

function showStats(response, roundTrip) {
  const h = (name) => response.headers.get(name);
  $("stat-tts").textContent = seconds(h("X-Timing-TTS"));
  $("stat-lipsync").textContent = seconds(h("X-Timing-Lipsync"));
  $("stat-encode").textContent = seconds(h("X-Timing-Encode"));
  $("stat-total").textContent = seconds(h("X-Timing-Total"));
  $("stat-roundtrip").textContent = seconds(roundTrip);
  $("stat-duration").textContent = t("index.stats.frames", { seconds: seconds(h("X-Video-Duration")), frames: h("X-Video-Frames") });
  const speed = Number(h("X-Video-Duration")) / Math.max(1e-3, Number(h("X-Timing-Total")));
  $("stat-speed").textContent = t("index.stats.realtime", { speed: speed.toFixed(1) });
  $("stats").hidden = false;
}

// A new render replaces the old result at once: no old video beside a new error.
function clearResult() {
  const video = $("video");
  video.removeAttribute("src");
  video.load();
  if (videoUrl) { URL.revokeObjectURL(videoUrl); videoUrl = null; }
  $("download").hidden = true;
  $("stats").hidden = true;
  $("status").textContent = "";
}

function showProgress(job) {
  const box = $("progress-box");
  box.hidden = false;
  const bar = $("progress");
  const text = $("progress-text");
  if (job.status === "queued") {
    bar.removeAttribute("value"); // indeterminate
    text.textContent = t("index.status.queued");
    return;
  }
  if (!job.frames_total) {
    bar.removeAttribute("value");
    text.textContent = t("index.status.starting");
    return;
  }
  bar.max = job.frames_total;
  bar.value = job.frames_done;
  const parts = [t("index.status.progress", { done: job.frames_done, total: job.frames_total })];
  if (job.eta_s != null) parts.push(t("index.status.eta", { seconds: Math.ceil(job.eta_s) }));
  text.textContent = parts.join(", ");
}

function requestOptions() {
  const file = $("audio-file").files[0];
  if (file) {
    const form = new FormData();
    form.append("audio", file);
    form.append("engine", $("engine").value);
    form.append("avatar", $("avatar").value);
    return { method: "POST", body: form };
  }
  return {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      text: $("text").value, language: $("language").value,
      engine: $("engine").value, avatar: $("avatar").value, ...(voice ? voice.fields() : {}),
    }),
  };
}

// Follows a job's SSE stream to its end; resolves with the last job state.
function followJob(job) {
  return new Promise((resolve) => {
    const source = new EventSource(urlWithToken(`/api/jobs/${job.id}/events`));
    currentJob = { id: job.id, source };
    const end = (state) => { source.close(); resolve(state); };
    source.addEventListener("progress", (e) => showProgress(JSON.parse(e.data)));
    ["done", "failed", "cancelled"].forEach((kind) =>
      source.addEventListener(kind, (e) => end(JSON.parse(e.data))));
    // The stream broke (server restart, proxy): ask for the state once instead.
    source.onerror = async () => {
      source.close();
      try { resolve(await (await apiFetch(`/api/jobs/${job.id}`)).json()); } catch (e) { resolve({ status: "failed", error: e.message }); }
    };
  });
}

async function generate(event) {
  event.preventDefault();
  showError("");
  clearResult();
  const button = $("speak");
  button.disabled = true;
  $("cancel").hidden = false;
  const started = performance.now();
  try {
    const response = await apiFetch("/api/jobs", requestOptions());
    if (!response.ok) throw new Error(await errorText(response));
    const job = await response.json();
    showProgress(job);
    const end = await followJob(job);
    if (end.status === "cancelled") { $("status").textContent = t("index.status.cancelled"); return; }
    if (end.status !== "done") throw new Error(end.error || end.status);
    const video = await apiFetch(`/api/jobs/${job.id}/video`);
    if (!video.ok) throw new Error(await errorText(video));
    const blob = await video.blob();
    videoUrl = URL.createObjectURL(blob);
    $("video").src = videoUrl;
    $("download").href = videoUrl;
    $("download").hidden = false;
    showStats(video, (performance.now() - started) / 1000);
    $("status").textContent = t("index.status.done", { size: (blob.size / 1024).toFixed(0) });
    $("video").play().catch(() => { /* autoplay may be blocked; the controls remain */ });
  } catch (error) {
    showError(error.message);
  } finally {
    currentJob = null;
    button.disabled = false;
    $("cancel").hidden = true;
    $("progress-box").hidden = true;
  }
}

// Cancel stops the server's work (its render slot is freed) and closes the progress stream.
async function cancel() {
  if (!currentJob) return;
  const { id } = currentJob;
  $("cancel").disabled = true;
  try {
    const response = await apiFetch(`/api/jobs/${id}`, { method: "DELETE" });
    if (!response.ok && response.status !== 404) showError(await errorText(response));
  } finally {
    $("cancel").disabled = false;
  }
}

// With a file chosen, Speak lip-syncs the file: say so, and offer to clear it.
function showFile() {
  const file = $("audio-file").files[0];
  $("file-row").hidden = !file;
  $("file-note").textContent = file ? t("index.file.chosen", { name: file.name }) : "";
  $("speak").textContent = t(file ? "index.file.speak" : "common.speak");
}

function updateCounter() {
  $("char-count").textContent = $("text").value.length;
}

$("text").value = t("index.sample");
$("generate-form").addEventListener("submit", generate);
$("cancel").addEventListener("click", cancel);
$("audio-file").addEventListener("change", showFile);
$("file-clear").addEventListener("click", () => { $("audio-file").value = ""; showFile(); });
$("text").addEventListener("input", updateCounter);
updateCounter();
loadChoices().catch((error) => showError(t("index.options.failed", { message: error.message })));
