// Live avatar over WebRTC: a reusable client (LiveAvatar) and the two UIs that use it,
// the /realtime pages (RealtimeUI.mountPage) and the "Live" panel of / (RealtimeUI.mountIndex).
// Everything is inside one function so nothing clashes with the other pages' globals.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const fetchApi = (url, options = {}) =>
    (typeof window.apiFetch === "function" ? window.apiFetch(url, options) : fetch(url, options));
  const tokenUrl = (url) => (typeof window.urlWithToken === "function" ? window.urlWithToken(url) : url);

  // Ask for H.264 first when this browser can decode it: the server encodes it with x264's
  // fastest preset, about half the CPU of VP8 per session (docs/benchmarks.md), so more
  // sessions fit on one machine. Browsers without H.264 keep their own order (VP8 first).
  function preferH264(transceiver) {
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities("video")?.codecs ?? [];
    const isH264 = (c) => c.mimeType.toLowerCase() === "video/h264";
    if (!codecs.some(isH264)) return;
    transceiver.setCodecPreferences([...codecs.filter(isH264), ...codecs.filter((c) => !isH264(c))]);
  }

  // An HTTP error with the server's JSON body ({error, reason, fallback ...}) attached.
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  async function readJson(response) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // One live session: the peer connection, its data channel and its stats.
  class LiveAvatar {
    constructor({ video, onEvent = () => {}, onStats = () => {}, onState = () => {} }) {
      this.video = video;
      this.onEvent = onEvent;
      this.onStats = onStats;
      this.onState = onState;
      this.pc = null;
      this.channel = null;
      this.sessionId = null;
      this.micTrack = null;
      this.audioSender = null;
      this.statsTimer = null;
      this.lastPing = null;
      this.rtt = null;
      this.speechLatency = null;
    }

    get connected() { return this.pc !== null && this.sessionId !== null; }

    // endpoint: /offer, /api/generate_stream (GAN) or /api/generate_stream_nogan (NOGAN).
    async connect({ endpoint = "/offer", engine, avatar, language, echoMic = false } = {}) {
      await this.close();
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      preferH264(pc.addTransceiver("video", { direction: "recvonly" }));
      // sendrecv from the start: the microphone can be switched on later without renegotiating.
      this.audioSender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
      this.channel = pc.createDataChannel("control");
      this.channel.onmessage = (e) => this._message(e.data);
      pc.ontrack = (e) => {
        const stream = this.video.srcObject instanceof MediaStream ? this.video.srcObject : new MediaStream();
        stream.addTrack(e.track);
        this.video.srcObject = stream;
      };
      pc.onconnectionstatechange = () => this.onState(pc.connectionState);
      await pc.setLocalDescription(await pc.createOffer());
      await this._gathered(pc); // the server takes the whole offer at once (no trickle)
      const body = { sdp: pc.localDescription.sdp, type: pc.localDescription.type, echo_mic: echoMic };
      if (engine) body.engine = engine;
      if (avatar) body.avatar = avatar;
      if (language) body.language = language;
      let answer;
      try {
        answer = await readJson(await fetchApi(endpoint, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        }));
      } catch (e) {
        pc.close();
        this.pc = null;
        throw e;
      }
      this.sessionId = answer.session_id;
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
      this.statsTimer = setInterval(() => this._stats(), 1000);
      return answer;
    }

    _gathered(pc) {
      if (pc.iceGatheringState === "complete") return Promise.resolve();
      return new Promise((resolve) => {
        const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
        pc.addEventListener("icegatheringstatechange", done);
        setTimeout(resolve, 3000); // use what was gathered so far
      });
    }

    _message(data) {
      let event;
      try { event = JSON.parse(data); } catch (_) { return; }
      if (event.type === "pong" && this.lastPing !== null) {
        this.rtt = performance.now() - this.lastPing;
        this.lastPing = null;
        return;
      }
      if (event.type === "speaking_started") this.speechLatency = event.latency_ms;
      this.onEvent(event);
    }

    _send(message) {
      if (this.channel && this.channel.readyState === "open") {
        this.channel.send(JSON.stringify(message));
        return true;
      }
      return false;
    }

    // Speak: over the data channel when it is open, else over HTTP.
    // ``voice``: optional {voice, speed, pitch} (only what differs from the defaults).
    async say(text, language, voice = {}) {
      if (this._send({ type: "say", text, language, ...voice })) return;
      await readJson(await fetchApi(`/api/sessions/${this.sessionId}/say`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, language, ...voice }),
      }));
    }

    // Switch the face live (the session keeps going).
    async setAvatar(avatar) {
      if (this._send({ type: "avatar", avatar })) return;
      await readJson(await fetchApi(`/api/sessions/${this.sessionId}/avatar`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ avatar }),
      }));
    }

    async interrupt() {
      if (this._send({ type: "interrupt" })) return;
      await readJson(await fetchApi(`/api/sessions/${this.sessionId}/interrupt`, { method: "POST" }));
    }

    // The avatar lip-syncs to the microphone while it is on.
    async setMicrophone(on) {
      if (!this.audioSender) return false;
      if (on && !this.micTrack) {
        const stream = await navigator.mediaDevices.getUserMedia({
          // Echo cancellation keeps the avatar's own voice out of the microphone.
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
        this.micTrack = stream.getAudioTracks()[0];
      }
      if (!on && this.micTrack) {
        this.micTrack.stop();
        this.micTrack = null;
      }
      await this.audioSender.replaceTrack(on ? this.micTrack : null);
      return on;
    }

    async _stats() {
      if (!this.pc) return;
      this.lastPing = performance.now();
      this._send({ type: "ping", t: Date.now() });
      const report = await this.pc.getStats();
      const out = { rtt: this.rtt, speechLatency: this.speechLatency };
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          out.fps = s.framesPerSecond;
          out.framesDropped = s.framesDropped;
          out.freezes = s.freezeCount;
          if (s.jitterBufferEmittedCount) out.videoBuffer = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
        } else if (s.type === "inbound-rtp" && s.kind === "audio" && s.jitterBufferEmittedCount) {
          out.audioBuffer = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
        } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
          out.networkRtt = 1000 * s.currentRoundTripTime;
        }
      });
      // The server releases audio and video together, so what remains is receiver-side
      // buffering: a positive value means the audio plays that much after the picture.
      if (out.videoBuffer !== undefined && out.audioBuffer !== undefined) {
        out.avOffset = out.audioBuffer - out.videoBuffer;
      }
      const oneWay = out.networkRtt !== undefined ? out.networkRtt / 2 : (this.rtt || 0) / 2;
      if (out.videoBuffer !== undefined) out.latency = oneWay + out.videoBuffer;
      this.onStats(out);
    }

    async close() {
      clearInterval(this.statsTimer);
      this.statsTimer = null;
      const id = this.sessionId;
      this.sessionId = null;
      if (this.micTrack) { this.micTrack.stop(); this.micTrack = null; }
      if (this.pc) { this.pc.close(); this.pc = null; }
      this.channel = null;
      if (this.video) this.video.srcObject = null;
      if (id) {
        try { await fetchApi(`/api/sessions/${id}`, { method: "DELETE" }); } catch (_) { /* gone */ }
      }
    }

    // Server-Sent Events of the session (the data channel carries the same events).
    events(onEvent) {
      const source = new EventSource(tokenUrl(`/api/sessions/${this.sessionId}/events`));
      source.onmessage = (e) => onEvent(JSON.parse(e.data));
      ["utterance_queued", "speaking_started", "speaking_ended", "error", "session_closed"]
        .forEach((kind) => source.addEventListener(kind, (e) => onEvent(JSON.parse(e.data))));
      return source;
    }
  }

  const fmt = (value, unit = " ms", digits = 0) =>
    (value === undefined || value === null || Number.isNaN(value) ? "–" : `${Number(value).toFixed(digits)}${unit}`);

  // Wires a set of elements (ids given by `ids`) to a LiveAvatar.
  function bind(ids, { endpoint, engine, options }) {
    const el = Object.fromEntries(Object.entries(ids).map(([k, id]) => [k, byId(id)]));
    const state = { endpoint, engine, micOn: false };
    const show = (node, text) => { if (node) { node.textContent = text || ""; node.hidden = !text; } };
    const live = new LiveAvatar({
      video: el.video,
      onState: (s) => {
        show(el.status, `connection: ${s}`);
        if (s === "failed" || s === "closed") setConnected(false);
      },
      onEvent: (e) => {
        if (e.type === "speaking_started") show(el.status, `speaking (first frame after ${fmt(e.latency_ms)})`);
        else if (e.type === "speaking_ended") show(el.status, e.interrupted ? "interrupted" : "listening");
        else if (e.type === "error") show(el.error, e.message);
        else if (e.type === "session_closed") { show(el.status, `session closed: ${e.reason}`); setConnected(false); }
      },
      onStats: (s) => {
        const set = (key, text) => { if (el[key]) el[key].textContent = text; };
        set("fps", fmt(s.fps, " fps", 1));
        set("latency", fmt(s.latency));
        set("offset", fmt(s.avOffset));
        set("rtt", fmt(s.rtt));
        set("speech", fmt(s.speechLatency));
        set("dropped", s.framesDropped === undefined ? "–" : `${s.framesDropped} dropped, ${s.freezes || 0} freezes`);
      },
    });

    // Where others can watch this session: a WHEP player URL and the OBS Browser Source page.
    function showWatchLinks(stream) {
      if (!el.watch) return;
      el.watch.replaceChildren();
      el.watch.hidden = !stream;
      if (!stream) return;
      const base = window.location.origin;
      const name = encodeURIComponent(stream);
      const links = [["WHEP", `${base}/whep/${name}`], ["OBS", `${base}/obs/${name}`]];
      el.watch.append("Watch: ");
      links.forEach(([label, url], i) => {
        const a = document.createElement("a");
        a.href = url;
        a.textContent = `${label} ${url}`;
        a.target = "_blank";
        a.rel = "noopener";
        if (i) el.watch.append(" · ");
        el.watch.append(a);
      });
    }

    function setConnected(on) {
      if (!on) showWatchLinks(null);
      el.connect.textContent = on ? "Disconnect" : "Connect";
      [el.say, el.interrupt, el.mic].forEach((b) => { if (b) b.disabled = !on; });
      if (!on && el.mic) { el.mic.setAttribute("aria-pressed", "false"); el.mic.textContent = "Mic off"; }
    }

    // The pinned Wav2Lip engine cannot run here: say why, offer the viseme engine.
    function offerFallback(reason, fallback) {
      show(el.error, reason);
      if (!el.fallback) return;
      el.fallback.hidden = !fallback;
      el.fallback.textContent = `Use the ${fallback} engine instead`;
      el.fallback.onclick = () => {
        state.endpoint = "/offer";
        state.engine = fallback;
        el.fallback.hidden = true;
        show(el.error, "");
        show(el.engineNote, `Engine: ${fallback} (weight-free fallback)`);
        connect();
      };
    }

    async function connect() {
      show(el.error, "");
      el.connect.disabled = true;
      try {
        const opts = options();
        const answer = await live.connect({ endpoint: state.endpoint, engine: state.engine || opts.engine,
          avatar: opts.avatar, language: opts.language, echoMic: opts.echoMic });
        show(el.status, `connected: ${answer.engine}, ${answer.avatar}`);
        showWatchLinks(answer.stream);
        setConnected(true);
      } catch (e) {
        if (e instanceof ApiError && e.status === 503 && e.body.engine) {
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
      if (live.connected) { await live.close(); setConnected(false); show(el.status, "disconnected"); }
      else await connect();
    });
    if (el.say) el.say.addEventListener("click", async () => {
      const opts = options();
      if (!opts.text.trim()) { show(el.error, "type something to say"); return; }
      show(el.error, "");
      const voice = opts.speed && opts.speed !== 1 ? { speed: opts.speed } : {};
      try { await live.say(opts.text, opts.language, voice); } catch (e) { show(el.error, e.message); }
    });
    if (el.interrupt) el.interrupt.addEventListener("click", () => live.interrupt().catch((e) => show(el.error, e.message)));
    if (el.mic) el.mic.addEventListener("click", async () => {
      try {
        state.micOn = await live.setMicrophone(!state.micOn);
        el.mic.setAttribute("aria-pressed", String(state.micOn));
        el.mic.textContent = state.micOn ? "Mic on" : "Mic off";
      } catch (e) { show(el.error, `microphone: ${e.message}`); }
    });
    window.addEventListener("pagehide", () => { live.close(); });
    setConnected(false);
    return { live, offerFallback };
  }

  async function getJson(url) { return readJson(await fetchApi(url)); }

  const RealtimeUI = {
    // The /realtime (GAN) and /realtime2 (NOGAN) page.
    async mountPage() {
      const nogan = window.location.pathname.replace(/\/$/, "").endsWith("realtime2");
      const engine = nogan ? "wav2lip-nogan" : "wav2lip-gan";
      const endpoint = nogan ? "/api/generate_stream_nogan" : "/api/generate_stream";
      byId("rt-title").textContent = `Live avatar (${nogan ? "NOGAN" : "GAN"})`;
      document.querySelectorAll(`nav a[href="/${nogan ? "realtime2" : "realtime"}"]`)
        .forEach((a) => a.setAttribute("aria-current", "page"));
      const { live, offerFallback } = bind({
        video: "rt-video", connect: "rt-connect", say: "rt-say", interrupt: "rt-interrupt", mic: "rt-mic",
        status: "rt-status", error: "rt-error", fallback: "rt-fallback", engineNote: "rt-engine",
        fps: "rt-fps", latency: "rt-latency", offset: "rt-offset", rtt: "rt-rtt", speech: "rt-speech",
        dropped: "rt-dropped", watch: "rt-watch",
      }, {
        endpoint, engine: null,
        options: () => ({ text: byId("rt-text").value, language: byId("rt-language").value,
          avatar: byId("rt-avatar").value, echoMic: byId("rt-echo").checked,
          speed: Number(byId("rt-speed").value) }),
      });
      byId("rt-engine").textContent = `Engine: ${engine}`;
      try {
        const [languages, avatars, engines] = await Promise.all([
          getJson("/api/languages"), getJson("/api/avatars"), getJson("/api/engines")]);
        const fill = (select, items, selected) => select.replaceChildren(
          ...items.map(([value, label]) => new Option(label, value, false, value === selected)));
        fill(byId("rt-language"), languages.languages.map((l) => [l.code, `${l.name} (${l.code})`]), languages.default);
        fill(byId("rt-avatar"), avatars.avatars.map((a) => [a.name, `${a.name} (${a.kind})`]), avatars.default);
        if (window.mountAvatarUpload) window.mountAvatarUpload(byId("rt-say").parentElement, byId("rt-avatar"));
        // A connected session switches its face live; before connecting the choice is
        // simply sent with the offer.
        byId("rt-avatar").addEventListener("change", () => {
          if (!live.connected) return;
          live.setAvatar(byId("rt-avatar").value).catch((e) => {
            byId("rt-error").textContent = e.message;
            byId("rt-error").hidden = false;
          });
        });
        const mine = engines.engines.find((e) => e.name === engine);
        if (mine && !mine.available) {
          const fallback = engines.engines.some((e) => e.name === "viseme" && e.available) ? "viseme" : null;
          offerFallback(`${engine} is unavailable: ${mine.error}`, fallback);
        }
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
        rtt: "live-rtt", speech: "live-speech", dropped: "live-dropped",
      }, {
        endpoint: "/offer", engine: null,
        options: () => ({ text: byId("text").value, language: byId("language").value,
          avatar: byId("avatar").value, engine: byId("engine").value, echoMic: false,
          speed: Number(byId("speed").value) }),
      });
    },
  };

  window.LiveAvatar = LiveAvatar;
  window.RealtimeUI = RealtimeUI;
  document.addEventListener("DOMContentLoaded", () => {
    if (byId("rt-page")) RealtimeUI.mountPage();
    else if (byId("live-panel")) RealtimeUI.mountIndex();
  });
})();
