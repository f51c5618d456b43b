// Interface language: Russian or English, from the browser's languages unless the user picked
// one with the switch (kept in localStorage). The original tool was Russian-first, and the
// Kazakh, Belarusian and Ukrainian speakers it served read Russian, so those browsers get ru.
// Static text carries data-i18n="key" (data-i18n-placeholder / -title / -aria-label for
// attributes); scripts call i18n.t("key", {param}). Loaded first on every page.
"use strict";

(function () {
  const STRINGS = {
    en: {
      "app.title": "Talking Avatar",
      "page.live.title": "Talking Avatar · Live",
      "nav.index": "Text → video",
      "nav.live": "Live avatar",
      "nav.live2": "Live (drawn / stills)",
      "lang.switch": "Interface language",
      "common.language": "Language",
      "common.engine": "Engine",
      "common.avatar": "Avatar",
      "common.voice": "Voice",
      "common.speed": "Speed",
      "common.speak": "Speak",
      "common.interrupt": "Interrupt",
      "common.cancel": "Cancel",
      "common.clear": "Clear",
      "index.text.title": "Text",
      "index.text.label": "What should the avatar say?",
      "index.sample": "Hello! I am a talking avatar. How are you today?",
      "index.file.label": "or lip-sync an audio file",
      "index.file.chosen": "Audio file: {name}. Speak lip-syncs this file, not the text.",
      "index.file.speak": "Lip-sync the file",
      "index.video.title": "Video",
      "index.download": "Download MP4",
      "index.stats.caption": "Processing",
      "index.stats.tts": "Text to speech",
      "index.stats.lipsync": "Lip-sync",
      "index.stats.encode": "Encoding",
      "index.stats.total": "Total on server",
      "index.stats.roundtrip": "Round trip",
      "index.stats.duration": "Video length",
      "index.stats.speed": "Speed",
      "index.stats.frames": "{seconds} ({frames} frames)",
      "index.stats.realtime": "{speed}× real time",
      "index.status.queued": "Waiting for a free render slot…",
      "index.status.starting": "Starting…",
      "index.status.progress": "Frame {done} of {total}",
      "index.status.eta": "about {seconds} s left",
      "index.status.done": "Done: {size} KB",
      "index.status.cancelled": "Cancelled",
      "index.options.failed": "Could not load the server's options: {message}",
      "live.title": "Live",
      "live.index.note": "The avatar live over WebRTC: it speaks the text above with the chosen language, engine and avatar, or follows your microphone.",
      "live.page.title": "Live avatar",
      "live.avatar.title": "Avatar",
      "live.connect": "Connect",
      "live.disconnect": "Disconnect",
      "live.speak.title": "Speak",
      "live.text": "Text",
      "live.sample": "Hello! I am a talking avatar. Ask me anything.",
      "live.speak.live": "Speak live",
      "live.tools.title": "Microphone, recording, sharing",
      "live.mic.off": "Mic off",
      "live.mic.on": "Mic on",
      "live.mic.level": "Microphone level",
      "live.mic.quiet": "The microphone is very quiet: speak closer, or check the input device.",
      "live.echo": "send my voice back with the face (presenter)",
      "live.record": "Record",
      "live.record.stop": "Stop recording",
      "live.record.download": "Download the recording ({seconds} s)",
      "live.record.running": "Recording…",
      "live.share.whep": "Copy WHEP URL",
      "live.share.whep.note": "for a WHEP player (OBS 30+ WHIP/WHEP source, GStreamer, another server) to watch this avatar",
      "live.share.obs": "Open OBS view",
      "live.share.obs.note": "the page to add as an OBS Browser Source: the avatar full window, with sound",
      "live.share.copied": "Copied: {url}",
      "live.share.copy.failed": "Copy this URL: {url}",
      "live.stats.caption": "Live stats",
      "live.stats.fps": "Frame rate",
      "live.stats.latency": "Latency (network + video buffer)",
      "live.stats.offset": "Estimated A/V offset (audio after video)",
      "live.stats.sync": "Sync correction (video held back)",
      "live.stats.rtt": "Data channel round trip",
      "live.stats.speech": "Text → first frame",
      "live.stats.video": "Video",
      "live.stats.dropped": "{dropped} dropped, {freezes} freezes",
      "live.state": "connection: {state}",
      "live.connected": "connected: {engine}, {avatar}",
      "live.disconnected": "disconnected",
      "live.speaking": "speaking (first frame after {ms})",
      "live.interrupted": "interrupted",
      "live.listening": "listening",
      "live.closed": "session closed: {reason}",
      "live.type.something": "type something to say",
      "live.mic.error": "microphone: {message}",
      "live.fallback": "Use the {engine} engine instead",
      "live.fallback.note": "Engine: {engine} (weight-free fallback)",
      "live.engine.note": "Engine: {engine}",
      "live.engine.unavailable": "{engine} is unavailable: {reason}",
      "live.engine.instead": "{wanted} cannot run here ({reason}); using {engine} instead.",
      "engine.viseme": "Viseme: no weights, starts at once",
      "engine.wav2lip-gan": "Wav2Lip GAN: real people, teeth",
      "engine.wav2lip-nogan": "Wav2Lip NOGAN: stills, drawn characters",
      "engine.off": "{label} (unavailable)",
      "avatar.add": "Add avatar",
      "avatar.file": "Avatar photo or video",
      "avatar.name": "Avatar name",
      "avatar.name.placeholder": "name (a-z, 0-9, -)",
      "avatar.upload": "Upload",
      "avatar.preview": "The face the server found",
      "avatar.choose": "choose a file and a name",
      "avatar.uploading": "uploading…",
      "avatar.preparing": "preparing… {percent} %",
      "avatar.failed": "preparation failed",
      "avatar.stream.broke": "the progress stream broke",
      "avatar.ready": "{name} is ready: the green box is the face it will animate",
      "avatar.kind.photo": "photo",
      "avatar.kind.video": "video",
      "avatar.kind.drawn": "drawn",
      "token.prompt": "This server needs an API token:",
      "obs.connecting": "connecting…",
      "obs.waiting": "waiting for stream {stream} ({reason})",
      "obs.no.stream": "no stream in the URL: open /obs/{stream}",
    },
    ru: {
      "app.title": "Говорящий аватар",
      "page.live.title": "Говорящий аватар · Онлайн",
      "nav.index": "Текст → видео",
      "nav.live": "Аватар онлайн",
      "nav.live2": "Онлайн (рисунки / фото)",
      "lang.switch": "Язык интерфейса",
      "common.language": "Язык",
      "common.engine": "Движок",
      "common.avatar": "Аватар",
      "common.voice": "Голос",
      "common.speed": "Скорость",
      "common.speak": "Сказать",
      "common.interrupt": "Прервать",
      "common.cancel": "Отменить",
      "common.clear": "Убрать",
      "index.text.title": "Текст",
      "index.text.label": "Что должен сказать аватар?",
      "index.sample": "Привет! Я говорящий аватар. Как дела?",
      "index.file.label": "или озвучить аудиофайл",
      "index.file.chosen": "Аудиофайл: {name}. «Сказать» озвучит файл, а не текст.",
      "index.file.speak": "Озвучить файл",
      "index.video.title": "Видео",
      "index.download": "Скачать MP4",
      "index.stats.caption": "Обработка",
      "index.stats.tts": "Синтез речи",
      "index.stats.lipsync": "Синхронизация губ",
      "index.stats.encode": "Кодирование",
      "index.stats.total": "Всего на сервере",
      "index.stats.roundtrip": "Запрос целиком",
      "index.stats.duration": "Длина видео",
      "index.stats.speed": "Скорость",
      "index.stats.frames": "{seconds} ({frames} кадров)",
      "index.stats.realtime": "{speed}× реального времени",
      "index.status.queued": "Ждём свободного места для рендера…",
      "index.status.starting": "Начинаем…",
      "index.status.progress": "Кадр {done} из {total}",
      "index.status.eta": "осталось около {seconds} с",
      "index.status.done": "Готово: {size} КБ",
      "index.status.cancelled": "Отменено",
      "index.options.failed": "Не удалось загрузить настройки сервера: {message}",
      "live.title": "Онлайн",
      "live.index.note": "Аватар онлайн через WebRTC: произносит текст выше с выбранными языком, движком и аватаром или повторяет за вашим микрофоном.",
      "live.page.title": "Аватар онлайн",
      "live.avatar.title": "Аватар",
      "live.connect": "Подключить",
      "live.disconnect": "Отключить",
      "live.speak.title": "Речь",
      "live.text": "Текст",
      "live.sample": "Привет! Я говорящий аватар. Спросите меня о чём-нибудь.",
      "live.speak.live": "Сказать онлайн",
      "live.tools.title": "Микрофон, запись, трансляция",
      "live.mic.off": "Микрофон выкл.",
      "live.mic.on": "Микрофон вкл.",
      "live.mic.level": "Уровень микрофона",
      "live.mic.quiet": "Микрофон почти не слышно: говорите ближе или проверьте устройство ввода.",
      "live.echo": "возвращать мой голос вместе с лицом (режим ведущего)",
      "live.record": "Записать",
      "live.record.stop": "Остановить запись",
      "live.record.download": "Скачать запись ({seconds} с)",
      "live.record.running": "Идёт запись…",
      "live.share.whep": "Копировать WHEP-ссылку",
      "live.share.whep.note": "для WHEP-плеера (источник WHIP/WHEP в OBS 30+, GStreamer, другой сервер), чтобы смотреть этого аватара",
      "live.share.obs": "Открыть вид для OBS",
      "live.share.obs.note": "страница для источника «Браузер» в OBS: аватар на всё окно, со звуком",
      "live.share.copied": "Скопировано: {url}",
      "live.share.copy.failed": "Скопируйте ссылку: {url}",
      "live.stats.caption": "Статистика",
      "live.stats.fps": "Частота кадров",
      "live.stats.latency": "Задержка (сеть + буфер видео)",
      "live.stats.offset": "Оценка рассинхрона (звук позже видео)",
      "live.stats.sync": "Коррекция синхронизации (видео задержано)",
      "live.stats.rtt": "Круг по каналу данных",
      "live.stats.speech": "Текст → первый кадр",
      "live.stats.video": "Видео",
      "live.stats.dropped": "пропущено {dropped}, зависаний {freezes}",
      "live.state": "соединение: {state}",
      "live.connected": "подключено: {engine}, {avatar}",
      "live.disconnected": "отключено",
      "live.speaking": "говорит (первый кадр через {ms})",
      "live.interrupted": "прервано",
      "live.listening": "слушает",
      "live.closed": "сеанс закрыт: {reason}",
      "live.type.something": "напишите, что сказать",
      "live.mic.error": "микрофон: {message}",
      "live.fallback": "Использовать движок {engine}",
      "live.fallback.note": "Движок: {engine} (без весов)",
      "live.engine.note": "Движок: {engine}",
      "live.engine.unavailable": "{engine} недоступен: {reason}",
      "live.engine.instead": "{wanted} здесь не запускается ({reason}); вместо него {engine}.",
      "engine.viseme": "Viseme: без весов, сразу",
      "engine.wav2lip-gan": "Wav2Lip GAN: живые люди, зубы",
      "engine.wav2lip-nogan": "Wav2Lip NOGAN: фото, рисованные персонажи",
      "engine.off": "{label} (недоступен)",
      "avatar.add": "Добавить аватар",
      "avatar.file": "Фото или видео аватара",
      "avatar.name": "Имя аватара",
      "avatar.name.placeholder": "имя (a-z, 0-9, -)",
      "avatar.upload": "Загрузить",
      "avatar.preview": "Лицо, которое нашёл сервер",
      "avatar.choose": "выберите файл и имя",
      "avatar.uploading": "загрузка…",
      "avatar.preparing": "подготовка… {percent} %",
      "avatar.failed": "подготовка не удалась",
      "avatar.stream.broke": "поток хода подготовки прервался",
      "avatar.ready": "{name} готов: зелёная рамка — лицо, которое будет двигаться",
      "avatar.kind.photo": "фото",
      "avatar.kind.video": "видео",
      "avatar.kind.drawn": "рисунок",
      "token.prompt": "Этому серверу нужен API-токен:",
      "obs.connecting": "подключение…",
      "obs.waiting": "ждём поток {stream} ({reason})",
      "obs.no.stream": "в адресе нет потока: откройте /obs/{stream}",
    },
  };
  const LANGUAGES = { ru: "Русский", en: "English" };
  const STORE_KEY = "talkingAvatarUiLanguage";
  const RUSSIAN_READERS = ["ru", "kk", "be", "uk", "ky", "tg"];

  function fromBrowser() {
    const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    for (const tag of wanted) {
      const base = String(tag).toLowerCase().split("-")[0];
      if (base === "en") return "en";
      if (RUSSIAN_READERS.includes(base)) return "ru";
    }
    return "en";
  }

  function chosen() {
    let stored = null;
    try { stored = window.localStorage.getItem(STORE_KEY); } catch (_) { /* storage off */ }
    return stored && STRINGS[stored] ? stored : fromBrowser();
  }

  let lang = chosen();

  function t(key, params = {}) {
    const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (params[name] ?? `{${name}}`));
  }

  const ATTRIBUTES = ["placeholder", "title", "aria-label"];

  function apply(root = document) {
    root.querySelectorAll("[data-i18n]").forEach((node) => { node.textContent = t(node.dataset.i18n); });
    ATTRIBUTES.forEach((attr) => {
      root.querySelectorAll(`[data-i18n-${attr}]`).forEach((node) => {
        node.setAttribute(attr, t(node.getAttribute(`data-i18n-${attr}`)));
      });
    });
    document.documentElement.lang = lang;
    const title = document.body && document.body.dataset.title;
    if (title) document.title = t(title);
  }

  // The switch in the header: changing it reloads the page, so every dynamic text is redrawn
  // by the code that made it (simpler and surer than re-rendering in place).
  function mountSwitch() {
    const header = document.querySelector("header");
    if (!header) return;
    const select = document.createElement("select");
    select.id = "ui-language";
    select.className = "ui-language";
    select.setAttribute("aria-label", t("lang.switch"));
    Object.entries(LANGUAGES).forEach(([code, name]) => select.append(new Option(name, code, false, code === lang)));
    select.addEventListener("change", () => {
      try { window.localStorage.setItem(STORE_KEY, select.value); } catch (_) { /* storage off */ }
      window.location.reload();
    });
    header.append(select);
  }

  window.i18n = { t, apply, get lang() { return lang; } };
  apply();
  mountSwitch();
})();
