// The live avatar's WebRTC client (LiveAvatar), used by the live pages and the Live panel of /.
// It also keeps the lips in sync where the user's ears are: see SyncCompensator.
"use strict";

(function () {
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

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000); // use what was gathered so far
    });
  }

  // The server releases a frame and its sound at the same instant, and Chromium aligns the
  // tracks of one stream only up to its jitter buffers: the sound still waits in the audio
  // jitter buffer and then in the output device (AudioContext.outputLatency), which the
  // picture does not, so the mouth moved ~65 ms before the sound was heard
  // (docs/benchmarks.md). The compensator holds the picture back by that difference through
  // the video receiver's jitterBufferTarget, from the delays measured over the last second.
  class SyncCompensator {
    constructor(receiverOf) {
      this.receiverOf = receiverOf; // kind -> RTCRtpReceiver
      this.last = {};
      this.targetMs = 0;
      this.ctx = null;
    }

    outputLatencyMs() {
      try {
        if (!this.ctx) {
          this.ctx = new AudioContext();
          this.ctx.resume().catch(() => {});
        }
        return 1000 * ((this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0));
      } catch (_) { return 0; }
    }

    // Average jitter-buffer delay (ms) of the frames emitted since the last report.
    recent(kind, stat) {
      const prev = this.last[kind];
      this.last[kind] = { delay: stat.jitterBufferDelay, count: stat.jitterBufferEmittedCount };
      if (!prev || stat.jitterBufferEmittedCount <= prev.count) return null;
      return 1000 * (stat.jitterBufferDelay - prev.delay) / (stat.jitterBufferEmittedCount - prev.count);
    }

    // Called once a second with the inbound-rtp stats; returns the hold-back in ms.
    update(audioStat, videoStat) {
      const receiver = this.receiverOf("video");
      if (!audioStat || !videoStat || !receiver || !("jitterBufferTarget" in receiver)) return null;
      const audio = this.recent("audio", audioStat);
      const video = this.recent("video", videoStat);
      if (audio === null || video === null) return this.targetMs;
      // The picture should wait in its buffer as long as the sound waits in its buffer and
      // in the output device. The target is not the delay itself (Chromium counts its decode
      // and render estimates into it), so it is corrected by the measured error (0.8 of it: most
      // of the way in one second, without chasing a noisy second); a change under 5 ms is not worth moving the buffer.
      const error = audio + this.outputLatencyMs() - video;
      const next = Math.round(Math.min(500, Math.max(0, this.targetMs + 0.8 * error)));
      if (Math.abs(next - this.targetMs) >= 5) {
        this.targetMs = next;
        try { receiver.jitterBufferTarget = next; } catch (_) { /* out of the browser's range */ }
      }
      return this.targetMs;
    }

    close() {
      if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
    }
  }

  // Chromium delays whichever track of a stream is ahead (its A/V sync of one "sync group",
  // the answer's msid stream), but it does not count the audio output device, so holding the
  // picture back alone makes it hold the sound back too (measured: the offset only halves).
  // The compensator therefore takes the video out of the audio's sync group and does the
  // whole alignment itself; the server releases both tracks on one clock, so there is no
  // drift between them for Chromium's sync to correct.
  function separateSyncGroups(sdp) {
    return sdp.split(/(?=^m=)/m).map((section) => (section.startsWith("m=video")
      ? section.replace(/^(a=msid:|a=ssrc:\d+ msid:)(\S+)/gm, "$1$2-video")
      : section)).join("");
  }

  // One live session: the peer connection, its data channel and its stats.
  class LiveAvatar {
    constructor({ video, onEvent = () => {}, onStats = () => {}, onState = () => {}, compensateSync = true }) {
      this.video = video;
      this.onEvent = onEvent;
      this.onStats = onStats;
      this.onState = onState;
      this.compensateSync = compensateSync;
      this.pc = null;
      this.channel = null;
      this.sessionId = null;
      this.stream = null;
      this.micTrack = null;
      this.audioSender = null;
      this.statsTimer = null;
      this.lastPing = null;
      this.rtt = null;
      this.speechLatency = null;
      this.sync = null;
    }

    get connected() { return this.pc !== null && this.sessionId !== null; }

    // endpoint: /offer, /api/generate_stream (GAN) or /api/generate_stream_nogan (NOGAN).
    async connect({ endpoint = "/offer", engine, avatar, language, echoMic = false } = {}) {
      await this.close();
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      const videoTransceiver = pc.addTransceiver("video", { direction: "recvonly" });
      preferH264(videoTransceiver);
      // sendrecv from the start: the microphone can be switched on later without renegotiating.
      const audioTransceiver = pc.addTransceiver("audio", { direction: "sendrecv" });
      this.audioSender = audioTransceiver.sender;
      const receivers = { video: videoTransceiver.receiver, audio: audioTransceiver.receiver };
      this.sync = this.compensateSync ? new SyncCompensator((kind) => receivers[kind]) : null;
      // Its AudioContext is made now, inside the Connect click: one made later, outside a
      // user gesture, may stay suspended and report no output latency.
      if (this.sync) this.sync.outputLatencyMs();
      this.channel = pc.createDataChannel("control");
      this.channel.onmessage = (e) => this._message(e.data);
      pc.ontrack = (e) => {
        const stream = this.video.srcObject instanceof MediaStream ? this.video.srcObject : new MediaStream();
        stream.addTrack(e.track);
        this.video.srcObject = stream;
      };
      pc.onconnectionstatechange = () => this.onState(pc.connectionState);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc); // the server takes the whole offer at once (no trickle)
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
      this.stream = answer.stream || null;
      const sdp = this.sync ? separateSyncGroups(answer.sdp) : answer.sdp;
      await pc.setRemoteDescription({ sdp, type: answer.type });
      this.statsTimer = setInterval(() => this._stats(), 1000);
      return answer;
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

    async _post(path, body) {
      return readJson(await fetchApi(`/api/sessions/${this.sessionId}/${path}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
      }));
    }

    // Speak: over the data channel when it is open, else over HTTP.
    // ``voice``: optional {voice, speed, pitch} (only what differs from the defaults).
    async say(text, language, voice = {}) {
      if (this._send({ type: "say", text, language, ...voice })) return;
      await this._post("say", { text, language, ...voice });
    }

    // Switch the face live (the session keeps going).
    async setAvatar(avatar) {
      if (this._send({ type: "avatar", avatar })) return;
      await this._post("avatar", { avatar });
    }

    async interrupt() {
      if (this._send({ type: "interrupt" })) return;
      await this._post("interrupt");
    }

    // Recording of this session's stream (rtc/outputs/recording.py): start, stop -> file info.
    async startRecording() {
      return readJson(await fetchApi(`/api/streams/${encodeURIComponent(this.stream)}/recording/start`, { method: "POST" }));
    }

    async stopRecording() {
      return readJson(await fetchApi(`/api/streams/${encodeURIComponent(this.stream)}/recording/stop`, { method: "POST" }));
    }

    // The avatar lip-syncs to the microphone while it is on; returns the track (or null).
    async setMicrophone(on) {
      if (!this.audioSender) return null;
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
      return this.micTrack;
    }

    async _stats() {
      if (!this.pc) return;
      this.lastPing = performance.now();
      this._send({ type: "ping", t: Date.now() });
      const report = await this.pc.getStats();
      const out = { rtt: this.rtt, speechLatency: this.speechLatency };
      let audioStat = null;
      let videoStat = null;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          videoStat = s;
          out.fps = s.framesPerSecond;
          out.framesDropped = s.framesDropped;
          out.freezes = s.freezeCount;
          if (s.jitterBufferEmittedCount) out.videoBuffer = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
        } else if (s.type === "inbound-rtp" && s.kind === "audio" && s.jitterBufferEmittedCount) {
          audioStat = s;
          out.audioBuffer = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
        } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
          out.networkRtt = 1000 * s.currentRoundTripTime;
        }
      });
      if (!this.pc) return; // closed while the stats were read
      // The server releases audio and video together, so what remains is receiver-side
      // buffering: a positive value means the audio plays that much after the picture.
      if (out.videoBuffer !== undefined && out.audioBuffer !== undefined) {
        out.avOffset = out.audioBuffer - out.videoBuffer;
      }
      if (this.sync) out.syncHold = this.sync.update(audioStat, videoStat);
      const oneWay = out.networkRtt !== undefined ? out.networkRtt / 2 : (this.rtt || 0) / 2;
      if (out.videoBuffer !== undefined) out.latency = oneWay + out.videoBuffer;
      this.onStats(out);
    }

    async close() {
      clearInterval(this.statsTimer);
      this.statsTimer = null;
      const id = this.sessionId;
      this.sessionId = null;
      this.stream = null;
      // The session is ended before the peer closes: a closed peer makes the server end it
      // on its own, and the DELETE would then find nothing (404).
      if (id) {
        try { await fetchApi(`/api/sessions/${id}`, { method: "DELETE" }); } catch (_) { /* gone */ }
      }
      if (this.micTrack) { this.micTrack.stop(); this.micTrack = null; }
      if (this.pc) { this.pc.close(); this.pc = null; }
      if (this.sync) { this.sync.close(); this.sync = null; }
      this.channel = null;
      if (this.video) this.video.srcObject = null;
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

  window.LiveAvatar = LiveAvatar;
  window.LiveApiError = ApiError;
  window.liveReadJson = readJson;
  window.LipSync = { SyncCompensator, separateSyncGroups };
})();
