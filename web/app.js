// The text-to-video page: loads the choices from the API, posts /api/generate, shows the MP4.
"use strict";

const $ = (id) => document.getElementById(id);
let videoUrl = null;

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

function fillSelect(select, items, selected) {
  select.replaceChildren(...items.map(({ value, label, disabled }) => {
    const option = new Option(label, value, false, value === selected);
    option.disabled = Boolean(disabled);
    return option;
  }));
}

// Named voices per language (GET /api/voices); a language with one voice shows no list.
let voices = {};

function fillVoices() {
  const list = voices[$("language").value] || [];
  fillSelect($("voice"), list.map((v) => ({ value: v, label: v })), list[0]);
  $("voice-label").hidden = list.length < 2;
}

// The voice fields a request sends: only what differs from the defaults.
function voiceFields() {
  const fields = {};
  const list = voices[$("language").value] || [];
  if (list.length > 1 && $("voice").value !== list[0]) fields.voice = $("voice").value;
  const speed = Number($("speed").value);
  if (speed && speed !== 1) fields.speed = speed;
  return fields;
}

async function loadChoices() {
  const [languages, engines, avatars, voiceList] = await Promise.all([
    getJson("/api/languages"), getJson("/api/engines"), getJson("/api/avatars"),
    getJson("/api/voices"),
  ]);
  voices = voiceList.voices;
  $("text").maxLength = languages.max_text_chars;
  $("char-limit").textContent = languages.max_text_chars;
  fillSelect($("language"), languages.languages.map((l) => ({ value: l.code, label: `${l.name} (${l.code})` })),
    languages.default);
  fillVoices();
  $("language").addEventListener("change", fillVoices);
  if (window.mountAvatarUpload) window.mountAvatarUpload($("generate-form"), $("avatar"));
  fillSelect($("engine"), engines.engines.map((e) => ({
    value: e.name, label: e.available ? e.name : `${e.name} (unavailable)`,
  })), engines.default);
  fillSelect($("avatar"), avatars.avatars.map((a) => ({ value: a.name, label: `${a.name} (${a.kind})` })),
    avatars.default);
  const unavailable = engines.engines.filter((e) => !e.available);
  const note = $("engine-note");
  note.textContent = unavailable.map((e) => `${e.name}: ${e.error}`).join("\n");
  note.hidden = unavailable.length === 0;
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
  $("stat-duration").textContent = `${seconds(h("X-Video-Duration"))} (${h("X-Video-Frames")} frames)`;
  const speed = Number(h("X-Video-Duration")) / Math.max(1e-3, Number(h("X-Timing-Total")));
  $("stat-speed").textContent = `${speed.toFixed(1)}× real time`;
  $("stats").hidden = false;
}

async function generate(event) {
  event.preventDefault();
  showError("");
  const button = $("speak");
  const file = $("audio-file").files[0];
  const options = { method: "POST" };
  if (file) {
    const form = new FormData();
    form.append("audio", file);
    form.append("engine", $("engine").value);
    form.append("avatar", $("avatar").value);
    options.body = form;
  } else {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify({
      text: $("text").value, language: $("language").value,
      engine: $("engine").value, avatar: $("avatar").value, ...voiceFields(),
    });
  }
  button.disabled = true;
  $("status").textContent = "Rendering…";
  const started = performance.now();
  try {
    const response = await apiFetch("/api/generate", options);
    if (!response.ok) throw new Error(await errorText(response));
    const blob = await response.blob();
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = URL.createObjectURL(blob);
    const video = $("video");
    video.src = videoUrl;
    $("download").href = videoUrl;
    $("download").hidden = false;
    showStats(response, (performance.now() - started) / 1000);
    $("status").textContent = `Done: ${(blob.size / 1024).toFixed(0)} KB`;
    video.play().catch(() => { /* autoplay may be blocked; the controls remain */ });
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  } finally {
    button.disabled = false;
  }
}

function updateCounter() {
  $("char-count").textContent = $("text").value.length;
}

$("generate-form").addEventListener("submit", generate);
$("text").addEventListener("input", updateCounter);
updateCounter();
loadChoices().catch((error) => showError(`Could not load the server's options: ${error.message}`));
