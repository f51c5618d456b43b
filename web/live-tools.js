// The live page's tools around a LiveAvatar: the microphone level meter, Record/Stop with a
// download link, and the ways to share the stream (WHEP URL, OBS view).
"use strict";

(function () {
  const t = (key, params) => window.i18n.t(key, params);
  const tokenUrl = (url) => (typeof window.urlWithToken === "function" ? window.urlWithToken(url) : url);

  // The level of the microphone track as the browser sends it (after its own processing),
  // so a user sees at once whether the avatar hears anything.
  class MicMeter {
    constructor(meter, note) {
      this.meter = meter;
      this.note = note;
      this.ctx = null;
      this.timer = null;
      this.quietSince = null;
    }

    start(track) {
      this.stop();
      if (!track || !this.meter) return;
      this.ctx = new AudioContext();
      const analyser = this.ctx.createAnalyser();
      analyser.fftSize = 1024;
      this.ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      this.ctx.resume().catch(() => {});
      this.timer = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let peak = 0;
        for (let i = 0; i < samples.length; i += 1) peak = Math.max(peak, Math.abs(samples[i]));
        // Decay slowly, rise at once: speech is bursty and a flickering bar is unreadable.
        const shown = Math.max(peak, this.meter.value * 0.85);
        this.meter.value = shown;
        this.meter.dataset.peak = String(Math.max(Number(this.meter.dataset.peak || 0), peak));
        this._quiet(peak);
      }, 50);
    }

    // Three seconds under -40 dBFS while on: tell the user (the mouth will hardly move).
    _quiet(peak) {
      if (!this.note) return;
      const now = performance.now();
      if (peak > 0.01) { this.quietSince = null; this.note.hidden = true; return; }
      if (this.quietSince === null) this.quietSince = now;
      if (now - this.quietSince > 3000) {
        this.note.textContent = t("live.mic.quiet");
        this.note.hidden = false;
      }
    }

    stop() {
      clearInterval(this.timer);
      this.timer = null;
      if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
      if (this.meter) this.meter.value = 0;
      if (this.note) this.note.hidden = true;
      this.quietSince = null;
    }
  }

  // Record/Stop: the server records the session's own stream (no second encode) and keeps
  // the MP4 in its recordings folder; the link downloads it.
  function bindRecording(button, link, live, showError) {
    if (!button) return { reset() {} };
    let recording = false;
    const set = (on) => {
      recording = on;
      button.setAttribute("aria-pressed", String(on));
      button.textContent = t(on ? "live.record.stop" : "live.record");
    };
    const offer = (state) => {
      if (!link || !state || !state.recording) return;
      link.href = tokenUrl(`/api/recordings/${encodeURIComponent(state.recording)}`);
      link.download = state.recording;
      link.textContent = t("live.record.download", { seconds: state.seconds });
      link.hidden = false;
    };
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        if (!recording) {
          if (link) link.hidden = true;
          await live.startRecording();
          set(true);
        } else {
          set(false);
          offer(await live.stopRecording());
        }
      } catch (e) {
        // 409 on stop: the server already ended it (its length or size limit).
        set(false);
        showError(e.message);
      } finally {
        button.disabled = !live.connected;
      }
    });
    return {
      reset() { set(false); button.disabled = !live.connected; },
      enable(on) { button.disabled = !on; if (!on) set(false); },
    };
  }

  // The stream's WHEP URL (copied, since opening it in a tab is meaningless: WHEP is a POST
  // of an SDP offer) and its OBS page (opened).
  function bindShare({ box, copy, obs, note }) {
    if (!box) return { show() {} };
    let whepUrl = null;
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(whepUrl);
        note.textContent = t("live.share.copied", { url: whepUrl });
      } catch (_) {
        note.textContent = t("live.share.copy.failed", { url: whepUrl });
      }
    });
    return {
      show(stream) {
        box.hidden = !stream;
        note.textContent = "";
        if (!stream) return;
        const name = encodeURIComponent(stream);
        whepUrl = `${window.location.origin}/whep/${name}`;
        obs.href = tokenUrl(`${window.location.origin}/obs/${name}`);
        copy.dataset.url = whepUrl;
      },
    };
  }

  window.LiveTools = { MicMeter, bindRecording, bindShare };
})();
