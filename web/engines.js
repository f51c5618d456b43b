// The choices shared by every page: engines with newcomer-readable names ("what it suits"),
// those that cannot run here greyed out with why (the server's reason names the fix);
// avatars with their kind; named voices per language.
"use strict";

(function () {
  const t = (key, params) => window.i18n.t(key, params);

  function label(engine) {
    const key = `engine.${engine.name}`;
    const known = t(key);
    return known === key ? engine.name : known;
  }

  // Options for a <select>: available engines first, the rest disabled.
  function engineOptions(engines) {
    const sorted = [...engines].sort((a, b) => Number(b.available) - Number(a.available));
    return sorted.map((e) => ({
      value: e.name,
      label: e.available ? label(e) : t("engine.off", { label: label(e) }),
      disabled: !e.available,
    }));
  }

  // One line per engine that cannot run: its name and the server's reason (with the fix).
  function unavailableNote(engines) {
    return engines.filter((e) => !e.available).map((e) => `${label(e)}: ${e.error}`).join("\n");
  }

  // ``wanted`` if it can run, else the server's default, else the first that can.
  function pickEngine(engines, wanted, fallbackDefault) {
    const can = (name) => engines.some((e) => e.name === name && e.available);
    if (wanted && can(wanted)) return wanted;
    if (fallbackDefault && can(fallbackDefault)) return fallbackDefault;
    const first = engines.find((e) => e.available);
    return first ? first.name : null;
  }

  function fillSelect(select, items, selected) {
    select.replaceChildren(...items.map(({ value, label: text, disabled }) => {
      const option = new Option(text, value, false, value === selected);
      option.disabled = Boolean(disabled);
      return option;
    }));
  }

  function avatarLabel(avatar) {
    const key = `avatar.kind.${avatar.kind}`;
    const kind = t(key);
    return `${avatar.name} (${kind === key ? avatar.kind : kind})`;
  }

  // Named voices of the chosen language (only when there is a choice) and what a request sends.
  function voicePicker(languageSelect, voiceSelect, label, speedInput) {
    let voices = {};
    const fill = () => {
      const list = voices[languageSelect.value] || [];
      fillSelect(voiceSelect, list.map((v) => ({ value: v, label: v })), list[0]);
      label.hidden = list.length < 2;
    };
    languageSelect.addEventListener("change", fill);
    return {
      load(all) { voices = all; fill(); },
      fields() {
        const out = {};
        const list = voices[languageSelect.value] || [];
        if (list.length > 1 && voiceSelect.value !== list[0]) out.voice = voiceSelect.value;
        const speed = Number(speedInput.value);
        if (speed && speed !== 1) out.speed = speed;
        return out;
      },
    };
  }

  window.Engines = { label, engineOptions, unavailableNote, pickEngine, fillSelect, avatarLabel, voicePicker };
})();
