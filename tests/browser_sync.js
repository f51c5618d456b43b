// In-page A/V measurement shared by the browser tests and bench/browser.py.
// window.__avsync.start(videoId) records, on one clock (performance.now(), ms):
//  - video: per displayed frame (requestVideoFrameCallback), its expectedDisplayTime and a
//    small luminance grid of the picture (GRID x GRID), so Python can find the mouth;
//  - audio: the RMS of the received audio track (MediaStreamAudioSourceNode -> AnalyserNode)
//    every ~10 ms, shifted by the output latency so it is the time the sound is heard.
// window.__avsync.stop() returns {grid, video: [[t, mediaTime, now, presentationTime,
// presentedFrames, ...lum]], audio: [[t, rms, latency]]}.
(() => {
  const GRID = 32;
  // Injected before the page's scripts (add_init_script): remember its peer connections
  // so getStats can be read without a hook in the page.
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  const state = { running: false, video: [], audio: [], timer: null, ctx: null };

  function sampleFrames(video) {
    const canvas = document.createElement("canvas");
    canvas.width = GRID;
    canvas.height = GRID;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = (now, meta) => {
      if (!state.running) return;
      g.drawImage(video, 0, 0, GRID, GRID);
      const px = g.getImageData(0, 0, GRID, GRID).data;
      const row = [meta.expectedDisplayTime, meta.mediaTime, now, meta.presentationTime, meta.presentedFrames];
      for (let i = 0; i < px.length; i += 4) row.push(0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2]);
      state.video.push(row);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  function sampleAudio(stream) {
    const ctx = new AudioContext();
    state.ctx = ctx;
    const source = ctx.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512; // ~10.7 ms at 48 kHz: one window per poll
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    state.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i += 1) sum += buf[i] * buf[i];
      // The window ends "now" in the graph; it is heard after the output latency, and its
      // centre is half a window earlier.
      const latency = 1000 * ((ctx.outputLatency || 0) + (ctx.baseLatency || 0));
      const t = performance.now() + latency - 500 * buf.length / ctx.sampleRate;
      state.audio.push([t, Math.sqrt(sum / buf.length), latency]);
    }, 10);
    ctx.resume();
  }

  window.__avsync = {
    start(videoId) {
      const video = document.getElementById(videoId);
      if (!(video.srcObject instanceof MediaStream)) throw new Error("video has no stream yet");
      state.running = true;
      state.video = [];
      state.audio = [];
      sampleFrames(video);
      sampleAudio(video.srcObject);
      return true;
    },
    stop() {
      state.running = false;
      clearInterval(state.timer);
      if (state.ctx) state.ctx.close();
      return { grid: GRID, video: state.video, audio: state.audio };
    },
    // Inbound-rtp numbers the viewer's browser reports for the page's peer connection.
    async inbound() {
      const pc = window.__pcs[window.__pcs.length - 1];
      const out = {};
      if (!pc) return out;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        out[s.kind] = {
          codec: s.codecId && stats.get(s.codecId) ? stats.get(s.codecId).mimeType : null,
          framesPerSecond: s.framesPerSecond, framesDropped: s.framesDropped,
          framesDecoded: s.framesDecoded, freezeCount: s.freezeCount,
          jitterBufferMs: s.jitterBufferEmittedCount ? 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount : null,
        };
      });
      return out;
    },
  };
})();
