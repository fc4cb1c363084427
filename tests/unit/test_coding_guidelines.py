"""Problem lists coded by the ICD-10-CM Official Guidelines (FY2026), one test per rule.

Each test is named by the guideline section it checks and quotes or paraphrases its text.
"""

from __future__ import annotations

import pytest
from factories import RECEIVED_AT, codesets_bare, dx, encounter, service

from services.coding.domain import Coder
from services.coding.guidelines import Coded, Sources, code_problems, combinations_missed, parts
from services.coding.terms import TermIndex, default_index
from services.refdata.icd10cm_index import AlphabeticIndex


@pytest.fixture(scope="module")
def index() -> TermIndex:
    return default_index()


def codes(coded: Coded) -> set[str]:
    return {a.code for a in coded.codes}


def run(index: TermIndex, *problems: str, setting: str = "professional") -> Coded:
    return code_problems(list(problems), setting, index)  # type: ignore[arg-type]


# --- I.A.15 "With" ----------------------------------------------------------------------
# "The classification presumes a causal relationship between the two conditions linked by
# these terms in the Alphabetic Index or Tabular List. These conditions should be coded as
# related even in the absence of provider documentation explicitly linking them."


def test_I_A_15_diabetes_and_ckd_listed_apart_are_coded_as_linked(index: TermIndex) -> None:
    coded = run(index, "type 2 diabetes mellitus", "chronic kidney disease stage 4")
    assert codes(coded) == {"E1122", "N184"}  # E11.22 + the stage (use additional code)
    why = next(a.why for a in coded.codes if a.code == "E1122")
    assert "I.A.15" in why and "Diabetes, by type, with, chronic kidney disease" in why
    assert not coded.holds


@pytest.mark.parametrize(
    ("complication", "code"),
    [
        ("diabetic polyneuropathy", "E1142"),
        ("gastroparesis", "E1143"),
        ("peripheral vascular disease", "E1151"),
        ("hypoglycemia", "E11649"),
        ("neuropathy", "E1140"),
    ],
)
def test_I_A_15_diabetes_with_a_condition_the_index_lists_under_with(
    index: TermIndex, complication: str, code: str
) -> None:
    coded = run(index, "diabetes mellitus type 2", complication)
    assert codes(coded) == {code}  # the complication's own code is taken into the combination


def test_I_A_15_a_condition_not_listed_under_with_is_not_linked(index: TermIndex) -> None:
    # Hyperlipidemia is not a "with" subterm of Diabetes: two codes, E11.9 stays.
    assert codes(run(index, "type 2 diabetes", "hyperlipidemia")) == {"E119", "E785"}


def test_I_A_15_a_with_condition_a_coder_must_read_holds_the_combination(
    index: TermIndex,
) -> None:
    coded = run(index, "type 2 diabetes", "kidney disease unrelated to diabetes")
    assert coded.holds  # "unless the documentation clearly states the conditions are unrelated"


# --- I.C.4.a Diabetes mellitus ----------------------------------------------------------


def test_I_C_4_a_2_type_not_documented_defaults_to_type_2(index: TermIndex) -> None:
    # "If the type of diabetes mellitus is not documented in the medical record the default
    # is E11.-, Type 2 diabetes mellitus."
    coded = run(index, "diabetes")
    assert codes(coded) == {"E119"}
    assert "I.C.4.a.2" in coded.codes[0].why


def test_I_C_4_a_as_many_codes_as_needed_for_the_complications(index: TermIndex) -> None:
    # "assign as many codes from categories E08 – E13 as needed to identify all of the
    # associated conditions that the patient has."
    coded = run(index, "DM type 1 with retinopathy", "CKD stage 2")
    assert codes(coded) == {"E10319", "E1022", "N182"}


def test_I_C_4_a_3_type_2_with_insulin_adds_Z79_4(index: TermIndex) -> None:
    # "If the patient is treated with both oral medications and insulin, ... Z79.4"; for type 2
    # patients who routinely use insulin, Z79.4 is assigned.
    assert codes(run(index, "type 2 diabetes on insulin")) == {"E119", "Z794"}


def test_I_C_4_a_uncontrolled_is_held_for_a_query(index: TermIndex) -> None:
    # Alphabetic Index: Diabetes, uncontrolled: meaning hyperglycemia / hypoglycemia.
    coded = run(index, "diabetes, uncontrolled")
    assert not coded.codes and "uncontrolled" in coded.holds[0][1]


# --- I.C.9.a Hypertension ---------------------------------------------------------------


def test_I_C_9_a_essential_hypertension_is_I10(index: TermIndex) -> None:
    assert codes(run(index, "high blood pressure")) == {"I10"}


def test_I_C_9_a_1_hypertension_with_heart_failure_is_I11_0_plus_I50(
    index: TermIndex,
) -> None:
    # "Assign a code from category I11 ... when a patient has hypertension and heart disease
    # ... Use an additional code from category I50 ... to identify the type of heart failure."
    coded = run(index, "HTN", "chronic diastolic heart failure")
    assert codes(coded) == {"I110", "I5032"}


def test_I_C_9_a_1_hypertension_with_an_unrelated_heart_condition_stays_I10(
    index: TermIndex,
) -> None:
    # Atrial fibrillation (I48) is not in I50.-, I51.4-I51.7, I51.89, I51.9: no I11.
    assert codes(run(index, "hypertension", "atrial fibrillation")) == {"I10", "I4891"}


def test_I_C_9_a_2_hypertension_with_ckd_is_I12_plus_the_stage(index: TermIndex) -> None:
    # "Assign a code from category I12 ... when both hypertension and a condition classifiable
    # to category N18 ... are present. ... use an additional code from category N18."
    assert codes(run(index, "hypertension", "CKD stage 3a")) == {"I129", "N1831"}
    assert codes(run(index, "hypertension", "end stage renal disease")) == {"I120", "N186"}


def test_I_C_9_a_3_hypertension_with_heart_failure_and_ckd_is_I13(index: TermIndex) -> None:
    # "Assign codes from combination category I13 ... when there is hypertension with both
    # heart involvement and chronic kidney disease."
    coded = run(index, "HTN", "CKD stage 4", "acute on chronic systolic heart failure")
    assert codes(coded) == {"I130", "N184", "I5023"}
    coded = run(index, "HTN", "CKD stage 5", "CHF")
    assert codes(coded) == {"I132", "N185", "I509"}


def test_I_C_14_a_1_stage_and_esrd_both_documented_is_N18_6(index: TermIndex) -> None:
    # "If both a stage of CKD and ESRD are documented, assign code N18.6 only."
    assert codes(run(index, "CKD stage 5", "ESRD")) == {"N186"}


# --- abbreviations and defaults of the Alphabetic Index --------------------------------


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("CAD", "I2510"),  # Disease, coronary (artery) -> I25.10
        ("COPD", "J449"),
        ("GERD", "K219"),
        ("BPH", "N400"),
        ("OSA", "G4733"),
        ("UTI", "N390"),
        ("CHF", "I509"),  # Failure, heart, congestive -> I50.9
        ("T2DM", "E119"),
        ("HFpEF", "I5030"),
        ("a-fib", "I4891"),
        ("CVA", "I639"),  # Accident, cerebrovascular -> I63.9
        ("PVD", "I739"),
        ("LBP", "M5450"),
        ("PTSD", "F4310"),
    ],
)
def test_I_A_alphabetic_index_defaults_for_problem_list_abbreviations(
    index: TermIndex, written: str, code: str
) -> None:
    assert codes(run(index, written)) == {code}


# --- I.C.21.c Z codes: history, family history, status ----------------------------------


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("history of carcinoma of the colon", "Z85038"),  # I.C.21.c.4 personal history
        ("h/o breast ca", "Z853"),
        ("Hx: DVT", "Z86718"),
        ("h/o stroke", "Z8673"),
        ("old MI", "I252"),  # I.C.9.e.4: old or healed MI -> I25.2, not a Z code
        ("former smoker", "Z87891"),
    ],
)
def test_I_C_21_c_4_personal_history_is_a_Z_code_never_the_disease(
    index: TermIndex, written: str, code: str
) -> None:
    assert codes(run(index, written)) == {code}


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("family history of diabetes", "Z833"),
        ("FHx: prostate cancer", "Z8042"),
        ("mother with breast cancer", "Z803"),
        ("FH colon cancer", "Z800"),
    ],
)
def test_I_C_21_c_4_family_history_is_Z80_Z84(index: TermIndex, written: str, code: str) -> None:
    assert codes(run(index, written)) == {code}


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("s/p CABG", "Z951"),
        ("status post left total hip arthroplasty", "Z96642"),
        ("cardiac pacemaker in place", "Z950"),
        ("on apixaban", "Z7901"),
    ],
)
def test_I_C_21_c_3_status_codes(index: TermIndex, written: str, code: str) -> None:
    assert codes(run(index, written)) == {code}


def test_I_C_21_c_history_of_an_unknown_condition_is_held(index: TermIndex) -> None:
    coded = run(index, "history of feeling off")
    assert not coded.codes and coded.holds


# --- uncertain diagnoses by setting -----------------------------------------------------


def test_IV_H_outpatient_codes_the_symptom_not_the_uncertain_diagnosis(
    index: TermIndex,
) -> None:
    # "Do not code diagnoses documented as 'probable', 'suspected,' 'questionable,' 'rule
    # out,' ... Rather, code the condition(s) to the highest degree of certainty ... such as
    # symptoms, signs".
    coded = run(index, "fever", "suspected pneumonia")
    assert codes(coded) == {"R509"} and not coded.holds


def test_IV_H_outpatient_uncertain_diagnosis_alone_is_held(index: TermIndex) -> None:
    coded = run(index, "possible pneumonia")
    assert not coded.codes and "IV.H" in coded.holds[0][1]


def test_II_H_inpatient_codes_the_uncertain_diagnosis_as_if_established(
    index: TermIndex,
) -> None:
    # "If the diagnosis documented at the time of discharge is qualified as 'probable,'
    # 'suspected,' ... code the condition as if it existed or was established."
    coded = run(index, "likely pneumonia", "fever", setting="inpatient")
    assert codes(coded) == {"J189"}  # the fever is integral to it (I.B.5)
    assert "II.H" in coded.codes[0].why


def test_context_is_read_per_statement() -> None:
    got = [(p.core, p.context) for p in parts(["chest pain, r/o MI", "no DVT"])]
    assert got == [("chest pain", "current"), ("mi", "uncertain"), ("no dvt", "negated")]


# --- laterality and site ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("R shoulder pain", "M25511"),
        ("osteoarthritis, left knee", "M1712"),
        ("bilateral knee osteoarthritis", "M170"),
        ("cellulitis of right lower leg", "L03115"),
    ],
)
def test_I_B_13_laterality_from_the_text(index: TermIndex, written: str, code: str) -> None:
    assert codes(run(index, written)) == {code}


# --- through the coder: reasons carried, structured codes checked -----------------------


def test_every_automatic_code_carries_its_reason() -> None:
    coder = Coder(codesets_bare(), index=default_index())
    enc = encounter(
        diagnoses=[
            dx("", system="text", display="DM2", primary=True),
            dx("", system="text", display="CKD 3b"),
            dx("", system="text", display="HTN"),
        ],
        services=[service("99213", "150.00")],
    )
    coded = coder.code(enc, coded_at=RECEIVED_AT)
    assert [d.code for d in coded.diagnoses] == ["E1122", "I129", "N1832"]
    assert not coded.review_reasons
    assert all(d.rationale for d in coded.diagnoses)
    assert "I.C.9.a.2" in (coded.diagnoses[1].rationale or "")


def test_I_A_15_structured_codes_sent_apart_go_to_review() -> None:
    assert combinations_missed(["E119", "N1831"]) == [
        "E11.9 and N18.31 are linked by 'with' (I.A.15): E11.22 is the combination code"
    ]
    coder = Coder(codesets_bare(), index=default_index())
    enc = encounter(
        diagnoses=[dx("I10", primary=True), dx("N18.4")], services=[service("99213", "150.00")]
    )
    coded = coder.code(enc, coded_at=RECEIVED_AT)
    assert any("I.C.9.a" in r for r in coded.review_reasons)


# --- the official CMS index files, when the reference folder has them -------------------

# A few entries in the layout of the CMS icd10cm_index_YYYY.xml / icd10cm_neoplasm_YYYY.xml
# releases (titles, nonessential modifiers inside the title, nested levels, cells).
INDEX_XML = """<?xml version="1.0" encoding="UTF-8"?>
<ICD10CM.index><version>2026</version><title>ICD-10-CM INDEX TO DISEASES and INJURIES</title>
<letter><title>D</title>
<mainTerm><title>Diabetes, diabetic<nemod>(mellitus) (sugar)</nemod></title><code>E11.9</code>
  <term level="1"><title>type 2</title><code>E11.9</code>
    <term level="2"><title>with</title>
      <term level="3"><title>chronic kidney disease</title><code>E11.22</code></term>
      <term level="3"><title>osteomyelitis</title><code>E11.69</code></term>
      <term level="3"><title>periodontal disease</title><code>E11.630</code></term>
    </term>
  </term>
</mainTerm>
</letter></ICD10CM.index>
"""
NEOPLASM_XML = """<?xml version="1.0" encoding="UTF-8"?>
<ICD10CM.index><version>2026</version><title>Neoplasm Table</title>
<letter><title>N</title>
<mainTerm><title>Neoplasm, neoplastic</title>
  <cell col="1"></cell><cell col="2">C80.1</cell><cell col="3">C79.9</cell>
  <cell col="4">D09.9</cell><cell col="5">D36.9</cell><cell col="6">D48.9</cell>
  <cell col="7">D49.9</cell>
  <term level="1"><title>gallbladder</title>
    <cell col="2">C23</cell><cell col="3">C78.89</cell><cell col="4">D01.5</cell>
    <cell col="5">D13.5</cell><cell col="6">D37.6</cell><cell col="7">D49.0</cell></term>
</mainTerm>
</letter></ICD10CM.index>
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    folder = tmp_path_factory.mktemp("refdata")
    (folder / "icd10cm_index_2026.xml").write_text(INDEX_XML)
    (folder / "icd10cm_neoplasm_2026.xml").write_text(NEOPLASM_XML)
    index = AlphabeticIndex.load(folder, "index")
    neoplasms = AlphabeticIndex.load(folder, "neoplasm")
    assert index is not None and neoplasms is not None
    return Sources(index, neoplasms)


def test_the_index_loader_reads_the_cms_layout(sources: Sources) -> None:
    assert sources.index is not None and sources.neoplasms is not None
    entry = sources.index.lookup("diabetes", "type 2", "with", "chronic kidney disease")
    assert entry is not None and entry.code == "E11.22"
    assert entry.path == ("Diabetes, diabetic", "type 2", "with", "chronic kidney disease")
    assert sources.neoplasms.neoplasm("gallbladder") == "C23"
    assert sources.neoplasms.neoplasm("gallbladder", "benign") == "D13.5"
    assert AlphabeticIndex.load(None) is None


def test_I_A_15_with_links_from_the_official_index(index: TermIndex, sources: Sources) -> None:
    # A "with" subterm the compact table does not carry: linked because the index lists it.
    coded = code_problems(
        ["type 2 diabetes", "periodontal disease"], "professional", index, sources
    )
    assert codes(coded) == {"E11630"} and not coded.holds
    assert "Alphabetic Index Diabetes, diabetic > type 2 > with > periodontal disease" in (
        coded.codes[0].why
    )
    # E11.69 "use additional code to identify complication": the line keeps its own code.
    coded = code_problems(["type 2 diabetes", "osteomyelitis"], "professional", index, sources)
    assert {"E1169"} <= codes(coded)
    assert "E119" not in codes(coded)


def test_I_C_21_c_4_history_of_a_site_from_the_table_of_neoplasms(
    index: TermIndex, sources: Sources
) -> None:
    # The compact site list has no gallbladder; the Table of Neoplasms gives C23 -> Z85.-
    coded = code_problems(["family history of gallbladder cancer"], "professional", index, sources)
    assert codes(coded) == {"Z800"}  # C15-C26: digestive organs
    assert code_problems(["family history of gallbladder cancer"], "professional", index).holds


def test_a_line_naming_a_rule_condition_and_another_keeps_both(index: TermIndex) -> None:
    # D63.1 "Anemia in chronic kidney disease" (code first N18.-): the CKD rule must not
    # swallow the anemia the same line names.
    assert codes(run(index, "anemia due to CKD stage 3a")) == {"N1831", "D631"}
