"""The message catalogue: every text telemon shows a clinician, in Dutch and English.

Alert Flag texts, rule titles and the dashboard's words all come from here, in the language
of ``TELEMON_LANGUAGE`` (``nl`` by default: clinicians in the Netherlands work in Dutch).
Numbers are written the way the language writes them (``3,2 kg`` in Dutch).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

LANGUAGES: Final = ("nl", "en")
DEFAULT_LANGUAGE: Final = "nl"

_MONTHS = {
    "nl": ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}

# key: (Dutch, English). Placeholders are str.format fields; values are formatted by the caller
# helpers below (numbers, times), so a template never formats a number itself.
_CATALOGUE: Final[dict[str, tuple[str, str]]] = {
    # -- rule titles (the Flag's code display) ---------------------------------------------------
    "rule.HF-WT-3D": ("Gewichtstoename in 3 dagen", "Weight gain in 3 days"),
    "rule.HF-WT-1D": ("Gewichtstoename in 1 dag", "Weight gain in 1 day"),
    "rule.HF-WT-BASE": ("Gewicht boven basiswaarde", "Weight above baseline"),
    "rule.HF-WT-LOSS": ("Gewichtsverlies (overdiurese)", "Weight loss (over-diuresis)"),
    "rule.HF-SBP-LOW": ("Lage systolische bloeddruk", "Low systolic blood pressure"),
    "rule.HF-SBP-HIGH": ("Hoge bloeddruk", "High blood pressure"),
    "rule.HF-HR-LOW": ("Lage hartfrequentie", "Low heart rate"),
    "rule.HF-HR-HIGH": ("Hoge hartfrequentie", "High heart rate"),
    "rule.HF-SPO2-LOW": ("Lage SpO2", "Low SpO2"),
    "rule.HF-SYMPTOM": ("Hartfalenklachten gemeld", "Heart-failure symptoms reported"),
    "rule.HF-NYHA-UP": ("NYHA-klasse hoger dan vastgesteld", "NYHA class worse than set class"),
    "rule.HF-COMBO": (
        "Tekenen van verslechterend hartfalen",
        "Signs of worsening heart failure",
    ),
    "rule.COPD-SPO2-ABS": ("Lage SpO2 in rust zonder zuurstof", "Low SpO2 at rest on room air"),
    "rule.COPD-SPO2-DROP": ("SpO2-daling t.o.v. gebruikelijke waarde", "SpO2 drop from usual"),
    "rule.COPD-RR-HIGH": ("Hoge ademfrequentie", "High respiratory rate"),
    "rule.COPD-HR-HIGH": ("Hoge hartfrequentie (COPD)", "High heart rate (COPD)"),
    "rule.COPD-TEMP": ("Koorts", "Fever"),
    "rule.COPD-SYMPTOM-ANTH": ("Anthonisen-klachten", "Anthonisen symptoms"),
    "rule.COPD-CAT-RISE": ("Stijging CAT-score", "CAT score rise"),
    "rule.COPD-CCQ-RISE": ("Stijging CCQ-score", "CCQ score rise"),
    "rule.COPD-PEF-DROP": ("Piekstroom onder persoonlijk beste", "Peak flow below personal best"),
    "rule.COPD-ROME-COMPOSITE": (
        "Matige exacerbatiecriteria (Rome)",
        "Moderate exacerbation criteria (Rome)",
    ),
    "rule.GEN-MISSING": ("Metingen ontbreken", "Measurements missing"),
    "rule.GEN-IMPLAUSIBLE": ("Meting controleren", "Verify measurement"),
    "rule.GEN-LATE": ("Beleid late metingen", "Late measurement policy"),
    "rule.SBP-DROP": ("Daling systolische bloeddruk", "Systolic blood pressure drop"),
    # -- measurement names in texts --------------------------------------------------------------
    "concept.weight": ("Gewicht", "Weight"),
    "concept.sbp": ("Systole", "SBP"),
    "concept.dbp": ("Diastole", "DBP"),
    "concept.hr": ("Pols", "HR"),
    "concept.spo2": ("SpO2", "SpO2"),
    "concept.rr": ("Ademfrequentie", "RR"),
    "concept.temp": ("Temperatuur", "Temperature"),
    "concept.pef": ("PEF", "PEF"),
    "concept.cat": ("CAT", "CAT"),
    "concept.ccq": ("CCQ", "CCQ"),
    "concept.nyha": ("NYHA-klasse", "NYHA class"),
    "concept.dyspnoea": ("Dyspneu", "Dyspnoea"),
    # -- pieces of alert texts -------------------------------------------------------------------
    "alert.headline": ("{title}: {finding}, {when}", "{title}: {finding}, {when}"),
    "alert.limit": ("grens {op} {value}", "limit {op} {value}"),
    "alert.personal_limit": ("persoonlijke grens {op} {value}", "personal limit {op} {value}"),
    "alert.mean_of": ("gemiddelde van {n} metingen", "mean of {n} readings"),
    "alert.with_symptoms": ("met klachten ({names})", "with symptoms ({names})"),
    "alert.baseline": ("Basiswaarde {baseline}", "Baseline {baseline}"),
    "alert.also": ("Ook: {text}", "Also: {text}"),
    "alert.late": (
        "ontvangen {hours} u na de meting",
        "received {hours} h after measurement",
    ),
    "alert.weight_gain": (
        "{gain} ({limit}){symptoms}",
        "{gain} ({limit}){symptoms}",
    ),
    "alert.weight_gain_detail": (
        "{today}; laagste van de {days} ervoor: {ref} op {ref_day}",
        "{today}; lowest of the {days} before: {ref} on {ref_day}",
    ),
    "alert.weight_base": (
        "{value}, {gain} boven basiswaarde {baseline} ({limit}){symptoms}",
        "{value}, {gain} above baseline {baseline} ({limit}){symptoms}",
    ),
    "alert.weight_loss_base": (
        "{value}, {change} t.o.v. basiswaarde {baseline} ({limit})",
        "{value}, {change} vs baseline {baseline} ({limit})",
    ),
    "alert.weight_loss_fall": (
        "{value}, {change} in {days} ({limit})",
        "{value}, {change} in {days} ({limit})",
    ),
    "alert.weight_loss_fall_detail": (
        "Hoogste van de {days} ervoor: {ref} op {ref_day}",
        "Highest of the {days} before: {ref} on {ref_day}",
    ),
    "alert.low_sbp_same_day": ("systole {value} dezelfde dag", "SBP {value} the same day"),
    "alert.threshold": ("{what} {value}{mean} ({limit})", "{what} {value}{mean} ({limit})"),
    "alert.rise": (
        "{what} {value}, {days} dagen op rij ≥ {pct} boven basiswaarde {baseline} ({limit})",
        "{what} {value}, {days} days in a row ≥ {pct} above baseline {baseline} ({limit})",
    ),
    "alert.rise_detail": ("Waarden {values}", "Values {values}"),
    "alert.spo2_drop": (
        "{value}, {drop} punten onder gebruikelijke {baseline} ({limit}){reasons}",
        "{value}, {drop} points below usual {baseline} ({limit}){reasons}",
    ),
    "alert.also_yesterday": ("ook gisteren", "also yesterday"),
    "alert.with_anthonisen": ("met {n} Anthonisen-criteria", "with {n} Anthonisen criteria"),
    "alert.score_rise": (
        "{what} {value}, +{rise} boven basiswaarde {baseline} ({limit})",
        "{what} {value}, +{rise} above baseline {baseline} ({limit})",
    ),
    "alert.score_run": (
        "{what} {values} bij {n} beoordelingen op rij, ≥ +{rise} boven basiswaarde {baseline} "
        "({limit})",
        "{what} {values} on {n} assessments in a row, ≥ +{rise} above baseline {baseline} "
        "({limit})",
    ),
    "alert.pef": (
        "{value} = {pct} van basiswaarde {baseline} ({limit})",
        "{value} = {pct} of baseline {baseline} ({limit})",
    ),
    "alert.criteria": (
        "{n} criteria binnen {hours} u: {items}",
        "{n} criteria within {hours} h: {items}",
    ),
    "alert.combo": (
        "{n} tekenen binnen {hours} u: {items}",
        "{n} signs within {hours} h: {items}",
    ),
    "alert.sbp_drop": (
        "{value}, {drop} onder basiswaarde {baseline}",
        "{value}, {drop} below baseline {baseline}",
    ),
    "alert.symptoms": ("{names}", "{names}"),
    "alert.nyha": ("klasse {value} gemeld{versus}", "class {value} reported{versus}"),
    "alert.nyha_versus": (" (vastgesteld: klasse {value})", " (set by clinician: class {value})"),
    "alert.anthonisen": ("{n}/3 ({names}){plan}", "{n}/3 ({names}){plan}"),
    "alert.action_plan": ("; start actieplan", "; start action plan"),
    "alert.escalation": ("met {text}", "with {text}"),
    "alert.implausible": ("{value} — {reason}", "{value} — {reason}"),
    "alert.no_weight": ("geen gewicht sinds {days} dagen", "no weight for {days} days"),
    "alert.questionnaire_overdue": (
        "vragenlijst {days} dagen te laat",
        "questionnaire overdue by {days} days",
    ),
    "alert.silence": (
        "helemaal geen metingen sinds {days} dagen",
        "no measurements at all for {days} days",
    ),
    "alert.missing_when": ("sinds {when}", "since {when}"),
    "days.one": ("1 dag", "1 day"),
    "days.many": ("{n} dagen", "{n} days"),
    "severity.mild": ("licht", "mild"),
    "severity.moderate": ("matig", "moderate"),
    "severity.severe": ("ernstig", "severe"),
    "severity.yes": ("ja", "yes"),
    "anthonisen.increased-dyspnoea": ("meer dyspneu", "more dyspnoea"),
    "anthonisen.increased-sputum-volume": ("meer sputum", "more sputum"),
    "anthonisen.increased-sputum-purulence": ("purulent sputum", "purulent sputum"),
    "symptom.267036007": ("kortademigheid", "shortness of breath"),
    "symptom.248548009": ("nachtelijke dyspneu", "nocturnal dyspnoea"),
    "symptom.62744007": ("orthopneu", "orthopnoea"),
    "symptom.267038008": ("oedeem", "oedema"),
    "symptom.297142003": ("gezwollen voeten", "foot swelling"),
    "symptom.84229001": ("vermoeidheid", "fatigue"),
    "symptom.404640003": ("duizeligheid", "dizziness"),
    "symptom.29857009": ("pijn op de borst", "chest pain"),
    "symptom.80313002": ("hartkloppingen", "palpitations"),
    "symptom.64379006": ("verminderde eetlust", "reduced appetite"),
    "symptom.40917007": ("verwardheid", "confusion"),
    "method.clinician-set": ("ingesteld door behandelaar", "clinician-set"),
    "method.median": (
        "mediaan {window} d excl. laatste {recent} d",
        "median {window} d excl. last {recent} d",
    ),
    "method.room_air": (", zonder extra zuurstof", ", room air"),
    "method.assessments": (
        "mediaan van laatste {n} beoordelingen",
        "median of last {n} assessments",
    ),
    # -- the dashboard ---------------------------------------------------------------------------
    "chart.weight": ("Gewicht", "Weight"),
    "chart.sbp": ("Systolische bloeddruk", "Systolic blood pressure"),
    "chart.dbp": ("Diastolische bloeddruk", "Diastolic blood pressure"),
    "chart.hr": ("Hartfrequentie", "Heart rate"),
    "chart.spo2": ("SpO2", "SpO2"),
    "chart.rr": ("Ademfrequentie", "Respiratory rate"),
    "chart.temp": ("Temperatuur", "Temperature"),
    "chart.cat": ("CAT-score", "CAT score"),
    "ui.nav_alerts": ("Meldingen", "Alerts"),
    "ui.nav_patients": ("Patiënten", "Patients"),
    "ui.logged_in_as": ("Ingelogd als", "Logged in as"),
    "ui.log_out": ("Uitloggen", "Log out"),
    "ui.priority": ("Prioriteit", "Priority"),
    "ui.patient": ("Patiënt", "Patient"),
    "ui.alert": ("Melding", "Alert"),
    "ui.age": ("Sinds", "Age"),
    "ui.actions": ("Acties", "Actions"),
    "ui.priority.red": ("Hoog", "High"),
    "ui.priority.orange": ("Middel", "Medium"),
    "ui.priority.info": ("Laag", "Low"),
    "ui.acknowledge": ("Gezien", "Acknowledge"),
    "ui.resolve": ("Afsluiten", "Resolve"),
    "ui.whole_group": ("Alle {n} meldingen van deze patiënt", "All {n} alerts of this patient"),
    "ui.note": ("Notitie (optioneel)", "Note (optional)"),
    "ui.also_open": ("Ook open bij deze patiënt", "Also open for this patient"),
    "ui.open_alerts": ("Open meldingen", "Open alerts"),
    "ui.to_handle": ("af te handelen", "to handle"),
    "ui.acknowledged_open": ("gezien, nog open", "acknowledged, still open"),
    "ui.acknowledged_section": ("Gezien, nog open", "Acknowledged, still open"),
    "ui.no_alerts": ("Geen open meldingen om af te handelen.", "No open alerts to handle."),
    "ui.truncated": (
        "Er zijn meer open meldingen dan deze pagina toont; de dringendste staan erop.",
        "More open alerts exist than this page lists; the most urgent ones are shown.",
    ),
    "ui.acknowledged_by": ("gezien door {who}, {ago} geleden", "acknowledged by {who} {ago} ago"),
    "ui.acknowledged_ago": ("gezien, {ago} geleden", "acknowledged {ago} ago"),
    "ui.resolved_by": ("afgesloten door {who}", "resolved by {who}"),
    "ui.born": ("geb. {date} ({age} jr)", "born {date} ({age} y)"),
    "ui.born_no_age": ("geb. {date}", "born {date}"),
    "ui.bsn_last4": ("BSN …{digits}", "BSN …{digits}"),
    "ui.last_measured": ("Laatst gemeten", "Last measured"),
    "ui.ago": ("{ago} geleden", "{ago} ago"),
    "ui.none_in_days": ("geen metingen in {days} dagen", "no measurements in {days} days"),
    "ui.not_measuring": ("Meet niet meer", "Not measuring"),
    "ui.stale": ("te laat", "overdue"),
    "ui.state_open": ("open", "open"),
    "ui.state_acknowledged": ("gezien", "acknowledged"),
    "ui.state_resolved": ("afgesloten", "resolved"),
    "ui.started_ago": ("gestart {ago} geleden", "started {ago} ago"),
    "ui.no_measurements": ("Geen metingen in deze periode", "No measurements in this period"),
    "ui.no_measurements_cat": (
        "Geen CAT-scores in deze periode: de patiënt vult de CAT niet in",
        "No CAT scores in this period: the patient does not fill in the CAT",
    ),
    "ui.notice.acknowledged": (
        "Melding als gezien gemarkeerd. Ze blijft open tot ze is afgesloten.",
        "Alert acknowledged. It stays open until it is resolved.",
    ),
    "ui.notice.resolved": ("Melding afgesloten.", "Alert resolved."),
    "ui.notice.logged-out": ("U bent uitgelogd.", "You are logged out."),
    "ui.patients_title": ("Patiënten in telemonitoring", "Patients in telemonitoring"),
    "ui.born_col": ("Geboren", "Born"),
    "ui.programme": ("Programma", "Programme"),
    "ui.no_patients": (
        "Er zijn geen patiënten in een programma.",
        "No patients are enrolled in a programme.",
    ),
    "ui.programme.HF": ("Hartfalen", "Heart failure"),
    "ui.programme.COPD": ("COPD", "COPD"),
    "ui.not_enrolled": ("niet in een programma", "not enrolled in a programme"),
    "ui.days": ("{n} dagen", "{n} days"),
    "ui.period": ("Periode", "Period"),
    "ui.more_data": (
        "Deze periode bevat meer gegevens dan één pagina toont; de oudste ontbreken.",
        "This period holds more data than one page shows; the oldest is left out.",
    ),
    "ui.alerts_title": ("Meldingen", "Alerts"),
    "ui.alerts_period": (
        "(open, en afgesloten in de laatste {days} dagen)",
        "(open, and closed in the last {days} days)",
    ),
    "ui.no_alerts_period": ("Geen meldingen in deze periode.", "No alerts in this period."),
    "ui.not_evaluated": (
        "Door geen enkele meldingsregel beoordeeld",
        "Not evaluated by any alert rule",
    ),
    "ui.not_evaluated_count": (
        "({n} in de laatste {days} dagen)",
        "({n} in the last {days} days)",
    ),
    "ui.not_evaluated_help": (
        "Vitale functies van deze patiënt die geen regel van de programma's van de patiënt "
        "leest: hieruit komt geen melding.",
        "Vital signs stored for this patient that none of the alert rules of the patient's "
        "programmes reads: no alert will come from them.",
    ),
    "ui.time": ("Tijd", "Time"),
    "ui.measurement": ("Meting", "Measurement"),
    "ui.value": ("Waarde", "Value"),
    "ui.why": ("Waarom", "Why"),
    "ui.trends": ("Verloop, laatste {days} dagen", "Trends, last {days} days"),
    "ui.legend": ("Legenda", "Legend"),
    "ui.legend_fired": ("grens van een melding", "limit an alert fired on"),
    "ui.legend_red": ("rode grens", "red limit"),
    "ui.legend_orange": ("oranje grens", "orange limit"),
    "ui.legend_reference": ("persoonlijke waarde", "personal value"),
    "ui.legend_marker": ("melding (gevuld: open)", "alert (filled: open)"),
    "ui.legend_personal": ("persoonlijke grens", "personal threshold"),
    "ui.values": ("Waarden ({n})", "Values ({n})"),
    "ui.notes": ("Notities", "Notes"),
    "ui.crumb_alerts": ("Meldingen", "Alerts"),
    "ui.crumb_patients": ("Patiënten", "Patients"),
    "ui.login_title": ("Inloggen zorgverlener", "Clinician login"),
    "ui.login_intro": (
        "Het telemonitoringdashboard is alleen voor zorgverleners.",
        "The telemonitoring dashboard is for care providers only.",
    ),
    "ui.login_warning": (
        "Iedereen die een geregistreerd UZI-nummer kent, kan hier inloggen. Gebruik dit nooit "
        "met echte patiëntgegevens.",
        "Anyone who knows a registered UZI number can log in here. Never use this with real "
        "patient data.",
    ),
    "ui.uzi": ("UZI-nummer", "UZI number"),
    "ui.log_in": ("Inloggen", "Log in"),
    "ui.personal": ("persoonlijk", "personal"),
    "ui.error.gone": ("Deze melding bestaat niet (meer).", "This alert does not exist (any more)."),
    "ui.error.not_alert": (
        "Deze Flag is geen melding van telemon.",
        "This Flag is not an alert raised by telemon.",
    ),
    "ui.error.changed": (
        "Deze melding is gewijzigd nadat de pagina werd geladen; er is niets gedaan. "
        "Bekijk haar opnieuw.",
        "This alert changed after the page was loaded; nothing was done. Check it again.",
    ),
    "ui.error.closed": ("Deze melding is niet meer open.", "This alert is no longer open."),
    "ui.error.acknowledged": (
        "Deze melding was al als gezien gemarkeerd.",
        "This alert was already acknowledged.",
    ),
    "ui.page.not_done": ("Niet gedaan", "Not done"),
    "ui.page.form_expired": ("Formulier verlopen", "Form expired"),
    "ui.page.reload": (
        "Laad de pagina opnieuw en probeer het nog eens.",
        "Reload the page and try again.",
    ),
    "ui.page.invalid": ("Ongeldig verzoek", "Invalid request"),
    "ui.page.invalid_action": (
        "Dit is geen geldige actie op een melding.",
        "This is not a valid alert action.",
    ),
    "ui.page.no_patient": ("Patiënt niet gevonden", "Patient not found"),
    "ui.page.no_such_patient": ("Deze patiënt bestaat niet.", "There is no such patient."),
    "ui.back": ("Terug", "Back"),
    "param.dry_weight_kg": ("streefgewicht", "dry weight"),
    "param.usual_spo2": ("gebruikelijke SpO2", "usual spo2"),
    "param.nyha_baseline": ("NYHA-klasse", "nyha baseline"),
    "param.pef_baseline": ("persoonlijke beste PEF", "pef baseline"),
    "param.cat_baseline": ("CAT-basiswaarde", "cat baseline"),
    "param.ccq_baseline": ("CCQ-basiswaarde", "ccq baseline"),
    "ui.gender.male": ("man", "male"),
    "ui.gender.female": ("vrouw", "female"),
    "ui.gender.other": ("anders", "other"),
    "ui.gender.unknown": ("onbekend", "unknown"),
    # -- login and broker failures ---------------------------------------------------------------
    "ui.msg.not_available": ("Niet beschikbaar", "Not available"),
    "ui.msg.use_broker": (
        "Log in via de identiteitsbroker.",
        "Log in through the identity broker.",
    ),
    "ui.msg.no_broker": (
        "Er is geen identiteitsbroker ingesteld.",
        "No identity broker is configured.",
    ),
    "ui.msg.form_expired": ("Inlogformulier verlopen", "Login form expired"),
    "ui.msg.form_expired_text": (
        "Het inlogformulier is verlopen of niet vanaf deze pagina verstuurd.",
        "The login form expired or was not sent from this page.",
    ),
    "ui.msg.too_many": ("Te veel mislukte inlogpogingen", "Too many failed logins"),
    "ui.msg.too_many_text": (
        "Te veel mislukte inlogpogingen. Probeer het over {minutes} minuten opnieuw.",
        "Too many failed login attempts. Try again in {minutes} minutes.",
    ),
    "ui.msg.login_unavailable": ("Inloggen niet mogelijk", "Login unavailable"),
    "ui.msg.login_failed": ("Inloggen mislukt", "Login failed"),
    "ui.msg.broker_refused": (
        "De identiteitsbroker heeft de login geweigerd.",
        "The identity broker refused the login.",
    ),
    # the identity module's own message, already in Dutch and English
    "ui.msg.detail": ("{detail}", "{detail}"),
    "ui.msg.not_found": ("Niet gevonden", "Not found"),
    "ui.msg.no_file": ("Dit bestand bestaat niet.", "No such file."),
}


def message(key: str, language: str, **values: object) -> str:
    """The catalogue text ``key`` in ``language`` with ``values`` filled in."""
    dutch, english = _CATALOGUE[key]
    template = english if language == "en" else dutch
    return template.format(**values) if values else template


def has_message(key: str) -> bool:
    """Whether the catalogue has ``key``."""
    return key in _CATALOGUE


def rule_title(rule_id: str, language: str, fallback: str = "") -> str:
    """A rule's title in ``language`` (``fallback`` for a rule the catalogue does not know)."""
    key = f"rule.{rule_id}"
    return message(key, language) if key in _CATALOGUE else (fallback or rule_id)


def concept_name(concept: str, language: str, fallback: str = "") -> str:
    """A measurement's short name in texts (``Gewicht``, ``SpO2``)."""
    key = f"concept.{concept}"
    return message(key, language) if key in _CATALOGUE else (fallback or concept)


def number(value: float, language: str) -> str:
    """At most one decimal, no trailing ``,0``; a decimal comma in Dutch."""
    text = f"{round(value, 1):g}"
    return text.replace(".", ",") if language != "en" else text


def signed(value: float, language: str) -> str:
    """At most one decimal with an explicit sign (``+2,4``, ``-1``)."""
    return ("-" if value < 0 else "+") + number(abs(value), language)


def quantity(value: float, unit: str, language: str, *, sign: bool = False) -> str:
    """A value with its unit as clinicians write it: ``86 %``, ``97/min``, ``+1,2 kg``."""
    shown = signed(value, language) if sign else number(value, language)
    if not unit:
        return shown
    return f"{shown}{unit}" if unit.startswith("/") else f"{shown} {unit}"


def limit_text(op: str, value: float, unit: str, language: str, *, personal: bool) -> str:
    """``grens < 90 %`` / ``personal limit ≥ 93,5/min``."""
    shown_op = {"<=": "≤", ">=": "≥"}.get(op, op)
    key = "alert.personal_limit" if personal else "alert.limit"
    return message(key, language, op=shown_op, value=quantity(value, unit, language))


def days_text(n: int, language: str) -> str:
    """``1 dag`` / ``3 dagen``."""
    return message("days.one", language) if n == 1 else message("days.many", language, n=n)


def month_name(month: int, language: str) -> str:
    """A month's short name (1 = ``jan``/``Jan``)."""
    return _MONTHS["en" if language == "en" else "nl"][month - 1]


def day_text(moment: datetime, zone: ZoneInfo, language: str) -> str:
    """A local day as ``7 dec``."""
    local = moment.astimezone(zone)
    return f"{local.day} {_MONTHS['en' if language == 'en' else 'nl'][local.month - 1]}"


def when_text(moment: datetime, zone: ZoneInfo, language: str) -> str:
    """A local moment as ``7 dec 08:10``."""
    return f"{day_text(moment, zone, language)} {moment.astimezone(zone):%H:%M}"


_MEDIAN = re.compile(r"median (\d+) d excl\. last (\d+) d(, room air)?")
_ASSESSMENTS = re.compile(r"median of last (\d+) assessments")


def method_text(method: str, language: str) -> str:
    """A baseline method (stored in English on the Flag) in ``language``."""
    if method == "clinician-set":
        return message("method.clinician-set", language)
    if found := _MEDIAN.fullmatch(method):
        text = message("method.median", language, window=found[1], recent=found[2])
        return text + (message("method.room_air", language) if found[3] else "")
    if found := _ASSESSMENTS.fullmatch(method):
        return message("method.assessments", language, n=found[1])
    return method
