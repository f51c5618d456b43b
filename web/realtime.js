// The live UIs over LiveAvatar (web/live-client.js): the live page (/realtime, /realtime2:
// RealtimeUI.mountPage) and the "Live" panel of / (RealtimeUI.mountIndex).
// Everything is inside one function so nothing clashes with the other pages' globals.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const t = (key, params) => window.i18n.t(key, params);
  const fetchApi = (url, options = {}) =>
    (typeof window.apiFetch === "function" ? window.apiFetch(url, options) : fetch(url, options));
  const tokenUrl = (url) => (typeof window.urlWithToken === "function" ? window.urlWithToken(url) : url);

  const fmt = (value, unit = " ms", digits = 0) =>
    (value === undefined || value === null || Number.isNaN(value) ? "–" : `${Number(value).toFixed(digits)}${unit}`);
  const STAT_KEYS = ["fps", "latency", "offset", "sync", "rtt", "speech", "dropped"];

  // Wires a set of elements (ids given by `ids`) to a LiveAvatar.
  function bind(ids, { options }) {
    const el = Object.fromEntries(Object.entries(ids).map(([k, id]) => [k, byId(id)]));
    const state = { engine: null, micOn: false };
    const show = (node, text) => { if (node) { node.textContent = text || ""; node.hidden = !text; } };
    const meter = new LiveTools.MicMeter(el.micLevel, el.micNote);
    const setStat = (key, text) => { if (el[key]) el[key].textContent = text; };
    const clearStats = () => STAT_KEYS.forEach((key) => setStat(key, "–"));
    // ?sync=off turns the receiver-side lip-sync correction off (to measure without it).
    const compensateSync = new URLSearchParams(window.location.search).get("sync") !== "off";
    const live = new LiveAvatar({
      video: el.video,
      compensateSync,
      onState: (s) => {
        show(el.status, t("live.state", { state: s }));
        if (s === "failed" || s === "closed") setConnected(false);
      },
      onEvent: (e) => {
        if (e.type === "speaking_started") show(el.status, t("live.speaking", { ms: fmt(e.latency_ms) }));
        else if (e.type === "speaking_ended") show(el.status, t(e.interrupted ? "live.interrupted" : "live.listening"));
        else if (e.type === "error") show(el.error, e.message);
        else if (e.type === "session_closed") { show(el.status, t("live.closed", { reason: e.reason })); setConnected(false); }
      },
      onStats: (s) => {
        if (!live.connected) return; // a late report after Disconnect
        setStat("fps", fmt(s.fps, " fps", 1));
        setStat("latency", fmt(s.latency));
        setStat("offset", fmt(s.avOffset));
        setStat("sync", fmt(s.syncHold));
        setStat("rtt", fmt(s.rtt));
        setStat("speech", fmt(s.speechLatency));
        setStat("dropped", s.framesDropped === undefined ? "–"
          : t("live.stats.dropped", { dropped: s.framesDropped, freezes: s.freezes || 0 }));
      },
    });
    const recording = LiveTools.bindRecording(el.record, el.recording, live, (m) => show(el.error, m));
    const share = LiveTools.bindShare({ box: el.share, copy: el.copyWhep, obs: el.obs, note: el.shareNote });

    function setConnected(on) {
      if (!on) { share.show(null); clearStats(); meter.stop(); state.micOn = false; }
      el.connect.textContent = t(on ? "live.disconnect" : "live.connect");
      [el.say, el.interrupt, el.mic].forEach((b) => { if (b) b.disabled = !on; });
      if (recording.enable) recording.enable(on);
      if (!on && el.mic) { el.mic.setAttribute("aria-pressed", "false"); el.mic.textContent = t("live.mic.off"); }
    }

    // The engine asked for cannot run: say why and offer the weight-free one.
    function offerFallback(reason, fallback) {
      show(el.error, reason);
      if (!el.fallback) return;
      el.fallback.hidden = !fallback;
      el.fallback.textContent = t("live.fallback", { engine: fallback });
      el.fallback.onclick = () => {
        state.engine = fallback;
        el.fallback.hidden = true;
        show(el.error, "");
        show(el.engineNote, t("live.fallback.note", { engine: fallback }));
        connect();
      };
    }

    async function connect() {
      show(el.error, "");
      el.connect.disabled = true;
      try {
        const opts = options();
        const answer = await live.connect({ endpoint: "/offer", engine: state.engine || opts.engine,
          avatar: opts.avatar, language: opts.language, echoMic: opts.echoMic });
        show(el.status, t("live.connected", { engine: answer.engine, avatar: answer.avatar }));
        share.show(answer.stream);
        setConnected(true);
      } catch (e) {
        if (e instanceof LiveApiError && e.status === 503 && e.body.engine) {
          offerFallback(e.body.error, e.body.fallback);
        } else {
          show(el.error, e.message || String(e));
        }
        setConnected(false);
      } finally {
        el.connect.disabled = false;
      }
    }

    el.connect.addEventListener("click", async () => {
      if (live.connected) {
        await live.close();
        setConnected(false);
        show(el.status, t("live.disconnected"));
      } else await connect();
    });
    if (el.say) el.say.addEventListener("click", async () => {
      const opts = options();
      if (!opts.text.trim()) { show(el.error, t("live.type.something")); return; }
      show(el.error, "");
      try { await live.say(opts.text, opts.language, opts.voice || {}); } catch (e) { show(el.error, e.message); }
    });
    if (el.interrupt) el.interrupt.addEventListener("click", () => live.interrupt().catch((e) => show(el.error, e.message)));
    if (el.mic) el.mic.addEventListener("click", async () => {
      try {
        const track = await live.setMicrophone(!state.micOn);
        state.micOn = Boolean(track);
        if (state.micOn) meter.start(track); else meter.stop();
        el.mic.setAttribute("aria-pressed", String(state.micOn));
        el.mic.textContent = t(state.micOn ? "live.mic.on" : "live.mic.off");
      } catch (e) { show(el.error, t("live.mic.error", { message: e.message })); }
    });
    window.addEventListener("pagehide", () => { live.close(); });
    setConnected(false);
    return { live, offerFallback, state };
  }

  async function getJson(url) { return liveReadJson(await fetchApi(url)); }

  // The avatar's still as the player's poster, so the panel is not a black square.
  function posterFor(video, avatar) {
    if (video && avatar) video.poster = tokenUrl(`/api/avatars/${encodeURIComponent(avatar)}/preview?box=0`);
  }

  const RealtimeUI = {
    // The live page: /realtime preselects Wav2Lip GAN, /realtime2 NOGAN (the original tool's
    // URLs); an engine that cannot run here is greyed with its reason, and the page falls
    // back to one that can with a quiet notice instead of an error.
    async mountPage() {
      const nogan = window.location.pathname.replace(/\/$/, "").endsWith("realtime2");
      const wanted = nogan ? "wav2lip-nogan" : "wav2lip-gan";
      document.querySelectorAll(`nav a[href="/${nogan ? "realtime2" : "realtime"}"]`)
        .forEach((a) => a.setAttribute("aria-current", "page"));
      byId("rt-text").value = t("live.sample");
      const voice = Engines.voicePicker(byId("rt-language"), byId("rt-voice"), byId("rt-voice-label"), byId("rt-speed"));
      const select = byId("rt-engine-select");
      const { live, state } = bind({
        video: "rt-video", connect: "rt-connect", say: "rt-say", interrupt: "rt-interrupt", mic: "rt-mic",
        status: "rt-status", error: "rt-error", fallback: "rt-fallback", engineNote: "rt-engine",
        fps: "rt-fps", latency: "rt-latency", offset: "rt-offset", sync: "rt-sync", rtt: "rt-rtt",
        speech: "rt-speech", dropped: "rt-dropped", micLevel: "rt-mic-level", micNote: "rt-mic-note",
        record: "rt-record", recording: "rt-recording", share: "rt-share", copyWhep: "rt-copy-whep",
        obs: "rt-obs", shareNote: "rt-share-note",
      }, {
        options: () => ({ text: byId("rt-text").value, language: byId("rt-language").value,
          avatar: byId("rt-avatar").value, echoMic: byId("rt-echo").checked, engine: select.value,
          voice: voice.fields() }),
      });
      select.addEventListener("change", () => { state.engine = null; });
      try {
        const [languages, avatars, engines, voices] = await Promise.all([
          getJson("/api/languages"), getJson("/api/avatars"), getJson("/api/engines"), getJson("/api/voices")]);
        const ui = window.i18n.lang;
        const language = languages.languages.some((l) => l.code === ui) ? ui : languages.default;
        Engines.fillSelect(byId("rt-language"), languages.languages.map((l) => ({ value: l.code, label: `${l.name} (${l.code})` })), language);
        voice.load(voices.voices);
        Engines.fillSelect(byId("rt-avatar"), avatars.avatars.map((a) => ({ value: a.name, label: Engines.avatarLabel(a) })), avatars.default);
        posterFor(byId("rt-video"), avatars.default);
        const engine = Engines.pickEngine(engines.engines, wanted, engines.default);
        Engines.fillSelect(select, Engines.engineOptions(engines.engines), engine);
        const mine = engines.engines.find((e) => e.name === wanted);
        const notes = [];
        if (engine !== wanted) {
          notes.push(t("live.engine.instead", { wanted,
            reason: mine ? mine.error : "?", engine }));
        } else notes.push(t("live.engine.note", { engine: Engines.label({ name: engine }) }));
        byId("rt-engine").textContent = notes.join("\n");
        if (window.mountAvatarUpload) window.mountAvatarUpload(byId("rt-fallback"), byId("rt-avatar"));
        // A connected session switches its face live; before connecting the choice is
        // simply sent with the offer.
        byId("rt-avatar").addEventListener("change", () => {
          posterFor(byId("rt-video"), byId("rt-avatar").value);
          if (!live.connected) return;
          live.setAvatar(byId("rt-avatar").value).catch((e) => {
            byId("rt-error").textContent = e.message;
            byId("rt-error").hidden = false;
          });
        });
      } catch (e) {
        byId("rt-error").textContent = e.message;
        byId("rt-error").hidden = false;
      }
    },

    // The "Live" panel of the text-to-video page: reuses its text, language, engine, avatar.
    mountIndex() {
      bind({
        video: "live-video", connect: "live-connect", say: "live-say", interrupt: "live-interrupt",
        mic: "live-mic", status: "live-status", error: "live-error", fallback: "live-fallback",
        engineNote: "live-status", fps: "live-fps", latency: "live-latency", offset: "live-offset",
        sync: "live-sync", rtt: "live-rtt", speech: "live-speech", dropped: "live-dropped",
      }, {
        options: () => {
          const speed = Number(byId("speed").value);
          return { text: byId("text").value, language: byId("language").value,
            avatar: byId("avatar").value, engine: byId("engine").value, echoMic: false,
            voice: speed && speed !== 1 ? { speed } : {} };
        },
      });
      const avatar = byId("avatar");
      const update = () => posterFor(byId("live-video"), avatar.value);
      avatar.addEventListener("change", update);
      // The avatar list is filled by app.js; the poster follows once it has a value.
      new MutationObserver(update).observe(avatar, { childList: true });
    },
  };

  window.RealtimeUI = RealtimeUI;
  document.addEventListener("DOMContentLoaded", () => {
    if (byId("rt-page")) RealtimeUI.mountPage();
    else if (byId("live-panel")) RealtimeUI.mountIndex();
  });
})();
