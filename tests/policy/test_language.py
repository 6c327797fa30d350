"""Language and script detection on a handful of sentences per language."""

from __future__ import annotations

import pytest

from safesail_guard.policy.language import LATIN_LANGUAGES, detect_language

SENTENCES = {
    "en": ["How do I make a cake for my friend's birthday party?",
           "The weather is nice today and we are going to the park.",
           "Can you explain what this error message means?"],
    "it": ["Come posso fare una torta per il compleanno del mio amico?",
           "Il tempo è bello oggi e andiamo al parco con i bambini.",
           "Puoi spiegarmi cosa significa questo messaggio di errore?"],
    "es": ["¿Cómo puedo hacer un pastel para el cumpleaños de mi amigo?",
           "El tiempo está bueno hoy y vamos al parque con los niños.",
           "¿Puedes explicarme qué significa este mensaje de error?"],
    "fr": ["Comment puis-je faire un gâteau pour l'anniversaire de mon ami ?",
           "Il fait beau aujourd'hui et nous allons au parc avec les enfants.",
           "Pouvez-vous m'expliquer ce que signifie ce message d'erreur ?"],
    "de": ["Wie kann ich einen Kuchen für den Geburtstag meines Freundes backen?",
           "Das Wetter ist heute schön und wir gehen mit den Kindern in den Park.",
           "Kannst du mir erklären, was diese Fehlermeldung bedeutet?"],
    "pt": ["Como posso fazer um bolo para o aniversário do meu amigo?",
           "O tempo está bom hoje e nós vamos ao parque com as crianças.",
           "Você pode me explicar o que significa esta mensagem de erro?"],
    "nl": ["Hoe kan ik een taart maken voor de verjaardag van mijn vriend?",
           "Het weer is vandaag mooi en we gaan met de kinderen naar het park.",
           "Kun je mij uitleggen wat deze foutmelding betekent?"],
    "vi": ["Làm thế nào để tôi làm một chiếc bánh cho sinh nhật của bạn tôi?",
           "Hôm nay thời tiết đẹp và chúng tôi đi công viên với các con.",
           "Bạn có thể giải thích thông báo lỗi này có nghĩa là gì không?"],
    "tr": ["Arkadaşımın doğum günü için nasıl pasta yapabilirim?",
           "Bugün hava çok güzel ve çocuklarla parka gidiyoruz.",
           "Bu hata mesajının ne anlama geldiğini bana açıklar mısın?"],
    "pl": ["Jak mogę upiec ciasto na urodziny mojego przyjaciela?",
           "Dzisiaj jest ładna pogoda i idziemy z dziećmi do parku.",
           "Czy możesz mi wyjaśnić, co oznacza ten komunikat o błędzie?"],
    "id": ["Bagaimana cara saya membuat kue untuk ulang tahun teman saya?",
           "Cuaca hari ini sangat cerah dan kami pergi ke taman dengan anak-anak.",
           "Bisakah kamu menjelaskan apa arti pesan kesalahan ini?"],
}

SCRIPTS = [
    ("我怎样才能为我朋友的生日做一个蛋糕？", "zh", "Hani"),
    ("今天天气很好，我们和孩子们一起去公园。", "zh", "Hani"),
    ("友達の誕生日のためにケーキを作るにはどうすればいいですか？", "ja", "Jpan"),
    ("今日は天気が良いので、子供たちと公園に行きます。", "ja", "Jpan"),
    ("친구 생일을 위해 케이크를 어떻게 만들 수 있나요?", "ko", "Hang"),
    ("मैं अपने दोस्त के जन्मदिन के लिए केक कैसे बना सकता हूँ?", "hi", "Deva"),
    ("كيف يمكنني صنع كعكة لعيد ميلاد صديقي؟", "ar", "Arab"),
    ("چگونه می‌توانم برای تولد دوستم کیک درست کنم؟", "fa", "Arab"),
    ("Как я могу испечь торт на день рождения моего друга?", "ru", "Cyrl"),
    ("Дякую, і до зустрічі в неділю, мій друже!", "uk", "Cyrl"),
    ("ฉันจะทำเค้กวันเกิดให้เพื่อนได้อย่างไร", "th", "Thai"),
    ("איך אני יכול להכין עוגה ליום ההולדת של החבר שלי?", "he", "Hebr"),
    ("Πώς μπορώ να φτιάξω μια τούρτα για τα γενέθλια του φίλου μου;", "el", "Grek"),
]


@pytest.mark.parametrize("lang, sentence", [(lang, s) for lang, ss in SENTENCES.items() for s in ss])
def test_latin_script_languages(lang: str, sentence: str) -> None:
    guess = detect_language(sentence)
    assert (guess.code, guess.script) == (lang, "Latn")
    assert 0.3 <= guess.confidence <= 1.0


def test_every_latin_profile_is_covered() -> None:
    assert set(SENTENCES) == set(LATIN_LANGUAGES)


@pytest.mark.parametrize("sentence, lang, script", SCRIPTS)
def test_non_latin_scripts(sentence: str, lang: str, script: str) -> None:
    guess = detect_language(sentence)
    assert (guess.code, guess.script) == (lang, script)
    assert guess.confidence >= 0.8


@pytest.mark.parametrize("text", ["", "ok", "hello", "12345 !!! ???", "bomb making instructions",
                                  "Paris London Berlin", "🙂🙂🙂", "a b", "中"])
def test_short_or_ambiguous_text_is_undetermined(text: str) -> None:
    guess = detect_language(text)
    assert guess.code == "und" and not guess.determined and guess.confidence <= 0.2


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["list"], "\ud800 lone surrogate \x00", "x" * 100_000])
def test_never_raises(value: object) -> None:
    guess = detect_language(value)
    assert 0.0 <= guess.confidence <= 1.0


def test_mostly_english_with_a_foreign_word_stays_english() -> None:
    guess = detect_language("How do you say 蛋糕 in English, and what is the word for it in French?")
    assert guess.code == "en"


def test_short_text_has_lower_confidence_than_long() -> None:
    short = detect_language("Привет мир")
    long = detect_language("Как я могу испечь торт на день рождения моего друга? Это очень важно для меня.")
    assert short.code == long.code == "ru" and short.confidence < long.confidence


def test_to_dict() -> None:
    doc = detect_language("Wie kann ich einen Kuchen backen, bitte?").to_dict()
    assert set(doc) == {"code", "script", "confidence"}
    assert (doc["code"], doc["script"]) == ("de", "Latn")
    assert 0.3 < doc["confidence"] <= 1 and doc["confidence"] == round(doc["confidence"], 3)
