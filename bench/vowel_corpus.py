"""What bench/vowels.py learns from and measures on: sentences and espeak voices.

The held-out part shares neither a sentence nor a voice variant with the learning part, and
its speeds and pitches are ones the learning part does not use either. The sentences were
written for this benchmark: everyday phrases rich in о/у, и/э, а and м/б/п.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Voice:
    """An espeak voice: a variant of espeak-ng-data/voices/!v (None: the plain voice), with
    VoiceOptions' speed and pitch."""

    variant: str | None
    speed: float
    pitch: float

    def __str__(self) -> str:
        return f"{self.variant or 'default'} x{self.speed:g} p{self.pitch:g}"


LEARN_VOICES = (
    Voice(None, 1.0, 1.0),
    Voice("m1", 0.9, 1.0),
    Voice("m2", 1.15, 0.85),
    Voice("m3", 0.95, 1.1),
    Voice("m4", 1.0, 1.2),
    Voice("m6", 1.1, 0.9),
    Voice("m7", 1.05, 0.95),
    Voice("f1", 1.0, 1.0),
    Voice("f2", 0.9, 1.2),
    Voice("f3", 1.05, 1.0),
    Voice("f4", 1.15, 0.85),
    Voice("f5", 0.95, 1.1),
    Voice("klatt", 1.0, 1.0),
)
"""Seven male, five female and one Klatt-synthesiser voice."""

HELD_OUT_VOICES = (
    Voice("m5", 1.08, 0.93),
    Voice("m8", 0.92, 1.07),
    Voice("belinda", 1.0, 1.04),
    Voice("aunty", 0.97, 0.96),
)
"""Two male and two female variants the templates never hear (other formant scalings)."""

LEARN_GAINS = (0.35, 0.6, 1.0, 1.5)
"""Learning utterances are scaled by these in turn, so the templates do not rely on espeak's
one loudness (a microphone is rarely that loud)."""

LEARN_TEXTS: dict[str, tuple[str, ...]] = {
    "ru": (
        "Мама мыла раму, а папа пил молоко.",
        "Утром у тумана уходит луна за гору.",
        "Эти белые лилии и пионы стоят в вазе у окна.",
        "Большой бурый медведь бродит по опушке леса.",
        "Вчера мы были в музее и видели много старых книг.",
        "Отец попросил купить хлеба, сыра и немного масла.",
        "Поезд опоздал на полчаса, и пассажиры ждали на перроне.",
        "Пушистый кот умывается у тёплой печки.",
        "Бабушка испекла пирог с яблоками и угостила внуков.",
        "Утка плывёт по пруду, а рыбы прячутся у берега.",
        "Мой брат любит футбол и играет по субботам.",
        "Эхо в горах повторяет каждое слово.",
        "Пожалуйста, позвоните мне завтра утром.",
        "Лиса бежала по полю и искала мышей.",
        "Муха села на варенье, вот и всё стихотворение.",
        "Ученики пишут диктант, а учитель ходит по классу.",
        "Добрый вечер, как ваши дела сегодня?",
        "Мы будем рады помочь вам выбрать подарок.",
        "Осенью в парке очень красиво и тихо.",
        "Дети пели песни и играли у реки.",
    ),
    "kk": (
        "Сәлеметсіз бе, менің атым Айгүл.",
        "Біз бүгін мектепке барамыз.",
        "Ол кітап оқығанды жақсы көреді.",
        "Таудың басында ақ қар жатыр.",
        "Бала доппен ойнап жүр.",
        "Мұғалім оқушыларға сабақ түсіндірді.",
        "Үйдің алдында үлкен бақ бар.",
        "Көктемде күн жылы болады.",
        "Менің әкем дәрігер болып жұмыс істейді.",
        "Біз жазда ауылға барып, әжемізге көмектестік.",
        "Қыстың күні суық, бірақ балалар далада ойнайды.",
        "Мына алма өте тәтті екен.",
        "Ұлым университетте оқиды.",
        "Бүгін кешке достарыммен кездесемін.",
        "Өзен бойында көп үйрек жүзіп жүр.",
        "Апам бізге бауырсақ пісірді.",
        "Қайырлы таң, қалыңыз қалай?",
        "Мен Алматыда тұрамын.",
        "Бүгін ауа райы өте жақсы.",
        "Олар өзенге балық аулауға барды.",
    ),
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Please bring me a cup of hot black coffee.",
        "We took a boat to the island in the morning.",
        "She sees the sheep eating green leaves.",
        "Move the blue box to the room upstairs.",
        "My father bought a bigger map of the bay.",
        "Open the window and let the cool air in.",
        "Every evening people meet at the beach.",
        "Bob put the big blue bowl on the table.",
        "Who knew the moon could look so huge?",
        "I think it is time to eat some cheese.",
        "Tom bought a box of apples at the market.",
        "Please keep the door open for a minute.",
        "The baby was sleeping in the warm room.",
        "Our team won the game on Tuesday afternoon.",
        "Maybe we should walk home along the river.",
        "Good afternoon, how can I help you today?",
        "The food at the new school was too cool.",
        "Peter and Bob will meet me at the museum.",
        "It is easy to see the moon tonight.",
    ),
}

HELD_OUT_TEXTS: dict[str, tuple[str, ...]] = {
    "ru": (
        "Сегодня утром я пошёл на работу пешком.",
        "Она купила новую шубу и тёплые ботинки.",
        "Пожилой мужчина читал газету в метро.",
        "Мы видели в зоопарке белого медведя и обезьян.",
        "Поздно вечером в окнах горит свет.",
        "Эту песню поют у костра уже много лет.",
    ),
    "kk": (
        "Анам бүгін дәмді тамақ пісірді.",
        "Біздің қала өте үлкен және әдемі.",
        "Оқушылар мұражайға саяхатқа барды.",
        "Күзде ағаштардың жапырақтары сарғаяды.",
        "Інім футбол ойнағанды жақсы көреді.",
        "Поезд таңертең сегізде жолға шығады.",
    ),
    "en": (
        "My mother made soup for the whole family.",
        "We usually go to the pool on Monday.",
        "The old man reads a book beside the fire.",
        "Could you pass me the blue pen, please?",
        "The bus to the city leaves at noon.",
        "Each week she feeds the geese by the lake.",
    ),
}
