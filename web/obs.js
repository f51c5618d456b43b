// OBS viewer: plays /whep/{stream} full-window, with sound, and reconnects on its own.
// The stream name comes from the page URL (/obs/{stream}); ?token= and ?bg= from its query.
"use strict";

(function () {
  const t = (key, params) => window.i18n.t(key, params);
  const params = new URLSearchParams(location.search);
  const stream = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const token = params.get("token");
  const bg = params.get("bg");
  // Lip sync where OBS's ears are (web/live-client.js): ?sync=off measures without it.
  const lipSync = params.get("sync") !== "off" && window.LipSync ? window.LipSync : null;
  let sync = null;
  let syncTimer = null;
  const video = document.getElementById("video");
  const canvas = document.getElementById("canvas");
  const status = document.getElementById("status");
  const RETRY_MS = 2000;
  let pc = null;
  let resource = null; // the WHEP session URL (Location), deleted when we leave
  let retryTimer = null;
  // Counters the browser test reads (frames actually presented).
  window.obsStats = { frames: 0, connects: 0, state: "new" };

  if (bg === "green") document.body.classList.add("bg-green");
  if (bg === "transparent") document.body.classList.add("bg-transparent");

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  function show(text) {
    status.textContent = text;
    document.body.classList.toggle("waiting", Boolean(text));
  }

  function waitForIce(peer) {
    // aiortc answers with every candidate; gathering ours first avoids trickle (PATCH).
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (peer.iceGatheringState === "complete") resolve(); };
      peer.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
  }

  async function connect() {
    retryTimer = null;
    window.obsStats.connects += 1;
    show(t("obs.connecting"));
    const peer = new RTCPeerConnection({ iceServers: [] });
    pc = peer;
    const receivers = {
      video: peer.addTransceiver("video", { direction: "recvonly" }).receiver,
      audio: peer.addTransceiver("audio", { direction: "recvonly" }).receiver,
    };
    if (lipSync) sync = new lipSync.SyncCompensator((kind) => receivers[kind]);
    const media = new MediaStream();
    peer.ontrack = (e) => {
      media.addTrack(e.track);
      video.srcObject = media;
      video.play().catch(() => { video.muted = true; video.play(); }); // autoplay fallback
    };
    peer.onconnectionstatechange = () => {
      window.obsStats.state = peer.connectionState;
      if (peer.connectionState === "connected") show("");
      if (["failed", "disconnected", "closed"].includes(peer.connectionState)) retry();
    };
    try {
      await peer.setLocalDescription(await peer.createOffer());
      await waitForIce(peer);
      const response = await fetch("/whep/" + encodeURIComponent(stream), {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/sdp" }),
        body: peer.localDescription.sdp,
      });
      if (response.status !== 201) throw new Error("WHEP " + response.status + ": " + await response.text());
      resource = response.headers.get("Location");
      const answer = await response.text();
      await peer.setRemoteDescription({ type: "answer", sdp: sync ? lipSync.separateSyncGroups(answer) : answer });
      if (sync) syncTimer = setInterval(compensate, 1000);
    } catch (err) {
      show(t("obs.waiting", { stream, reason: err.message }));
      retry();
    }
  }

  async function compensate() {
    if (!pc || !sync) return;
    const inbound = {};
    (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp") inbound[s.kind] = s; });
    if (sync) window.obsStats.syncHold = sync.update(inbound.audio, inbound.video);
  }

  function retry() {
    if (retryTimer !== null) return;
    leave();
    retryTimer = setTimeout(connect, RETRY_MS);
  }

  function leave() {
    if (resource) {
      fetch(resource, { method: "DELETE", headers: authHeaders({}), keepalive: true }).catch(() => {});
      resource = null;
    }
    clearInterval(syncTimer);
    syncTimer = null;
    if (sync) { sync.close(); sync = null; }
    if (pc) { pc.onconnectionstatechange = null; pc.close(); pc = null; }
  }

  // ?bg=transparent: WebRTC video has no alpha, so the avatar's uniform background (its
  // matte colour, read from the top-left pixel) is keyed out into a transparent canvas. Only
  // a background that is uniform all round the frame is keyed: a photo's is not, and keying
  // it would punch holes in hair and clothes (no person-segmentation model runs here; see
  // docs/obs.md), so a photo is shown whole, background included.
  const KEY_DISTANCE = 40; // summed |dR|+|dG|+|dB| within which a pixel is the matte's colour

  function distance(px, k, ref) {
    return Math.abs(px[k] - ref[0]) + Math.abs(px[k + 1] - ref[1]) + Math.abs(px[k + 2] - ref[2]);
  }

  // The top edge and the sides down to 60 % (shoulders may reach the bottom either way), read
  // as three thin strips: a photo is told apart without reading back the whole frame.
  function uniformBorder(ctx, w, h, ref) {
    const side = Math.max(1, Math.round(0.6 * h));
    for (const strip of [ctx.getImageData(0, 0, w, 1), ctx.getImageData(0, 0, 1, side),
      ctx.getImageData(w - 1, 0, 1, side)]) {
      for (let k = 0; k < strip.data.length; k += 4) {
        if (distance(strip.data, k, ref) >= KEY_DISTANCE) return false;
      }
    }
    return true;
  }

  function keyOut() {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) return;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, w, h);
    const ref = ctx.getImageData(0, 0, 1, 1).data;
    window.obsStats.keyed = uniformBorder(ctx, w, h, ref);
    if (!window.obsStats.keyed) return; // a photo: drawn as it is
    const image = ctx.getImageData(0, 0, w, h);
    const px = image.data;
    for (let k = 0; k < px.length; k += 4) {
      if (distance(px, k, ref) < KEY_DISTANCE) px[k + 3] = 0;
    }
    ctx.putImageData(image, 0, 0);
  }

  function onFrame() {
    window.obsStats.frames += 1;
    if (bg === "transparent") keyOut();
    video.requestVideoFrameCallback(onFrame);
  }

  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onFrame);
  }
  window.addEventListener("pagehide", leave);
  if (!stream) show(t("obs.no.stream", { stream: "{stream}" }));
  else connect();
})();
