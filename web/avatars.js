// "Add avatar": upload a photo or a short video loop, follow its preparation, preview the
// face the server found, then offer it in the page's avatar list (POST /api/avatars).
"use strict";

(function () {
  const t = (key, params) => window.i18n.t(key, params);
  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    if (text) node.textContent = text;
    return node;
  }

  // Mount the control after ``anchor``; ``select`` is the avatar list to add the new one to.
  function mountAvatarUpload(anchor, select) {
    if (!anchor || !select) return;
    const box = el("details", { class: "add-avatar" });
    box.append(el("summary", {}, t("avatar.add")));
    const file = el("input", { type: "file", accept: "image/jpeg,image/png,image/webp,video/mp4,video/webm,video/quicktime", "aria-label": t("avatar.file") });
    const name = el("input", { type: "text", placeholder: t("avatar.name.placeholder"), pattern: "[a-z0-9][a-z0-9_-]{0,39}", "aria-label": t("avatar.name") });
    const button = el("button", { type: "button" }, t("avatar.upload"));
    const bar = el("progress", { max: "1", value: "0", hidden: "" });
    const status = el("p", { class: "note", role: "status" });
    const preview = el("img", { alt: t("avatar.preview"), hidden: "", width: "192" });
    box.append(file, name, button, bar, status, preview);
    anchor.after(box);

    button.addEventListener("click", async () => {
      const chosen = file.files[0];
      if (!chosen || !name.value.trim()) { status.textContent = t("avatar.choose"); return; }
      const form = new FormData();
      form.append("file", chosen);
      form.append("name", name.value.trim());
      button.disabled = true;
      preview.hidden = true;
      bar.hidden = false;
      bar.value = 0;
      status.textContent = t("avatar.uploading");
      try {
        const resp = await apiFetch("/api/avatars", { method: "POST", body: form });
        const body = await resp.json();
        if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
        const done = await follow(body.name, (state) => {
          bar.value = state.progress;
          status.textContent = t("avatar.preparing", { percent: Math.round(state.progress * 100) });
        });
        if (done.status !== "ready") throw new Error(done.error || t("avatar.failed"));
        preview.src = urlWithToken(`/api/avatars/${done.name}/preview?t=${Date.now()}`);
        preview.hidden = false;
        select.append(new Option(window.Engines ? Engines.avatarLabel({ name: done.name, kind: "photo" }) : done.name, done.name, true, true));
        select.dispatchEvent(new Event("change"));
        status.textContent = t("avatar.ready", { name: done.name });
      } catch (e) {
        status.textContent = e.message;
      } finally {
        button.disabled = false;
        bar.hidden = true;
      }
    });
  }

  // Progress over SSE until ready or failed.
  function follow(avatar, onProgress) {
    return new Promise((resolve) => {
      const source = new EventSource(urlWithToken(`/api/avatars/${avatar}/events`));
      source.addEventListener("avatar", (event) => {
        const state = JSON.parse(event.data);
        onProgress(state);
        if (state.status !== "preparing") { source.close(); resolve(state); }
      });
      source.onerror = () => { source.close(); resolve({ status: "failed", error: t("avatar.stream.broke") }); };
    });
  }

  window.mountAvatarUpload = mountAvatarUpload;
})();
