"""``mcl.report.findings``: probe matrices, chance levels and the headline, from hand-written eval.json."""

import pytest

from mcl.report.findings import chance_levels, find_claim, find_finetune_claim, headline, probe_matrices
from mcl.report.recipe import Recipe, counterpart, recipe_of


def rows(probe: str, table: dict[str, dict[str, float]]) -> list[dict]:
    return [{"representation": name, "attribute": attribute, "probe": probe, "accuracy": value}
            for name, scores in table.items() for attribute, value in scores.items()]


RESULT = {"kind": "images", "rows": rows("linear", {
    "stage-1": {"shape": 0.90, "texture": 0.42, "color": 0.95},
    "stage-2": {"shape": 0.60, "texture": 0.70, "color": 0.50},
    "stage-3": {"shape": 0.55, "texture": 0.72, "color": 0.45},
    "mcl-2": {"shape": 0.91, "texture": 0.71, "color": 0.96},
    "mcl-3": {"shape": 0.92, "texture": 0.74, "color": 0.96},
    "ensemble-2": {"shape": 0.92, "texture": 0.50, "color": 0.97},
    "ensemble-3": {"shape": 0.93, "texture": 0.57, "color": 0.97},
}) + rows("knn", {"stage-1": {"shape": 0.1, "texture": 0.1, "color": 0.1}})}
CHANCE = {"shape": 0.1, "texture": 0.1, "color": 0.1}


def test_headline_names_the_suppressed_attribute_and_its_recovery():
    assert headline(RESULT, CHANCE) == ("By linear probe, stage 1 suppressed texture (42% vs chance 10%); mcl-3 "
                                        "recovered it to 74% (ensemble-3, as many seeds of stage 1: 57%).")
    claim = find_claim(RESULT, CHANCE)
    assert (claim.attribute, claim.k, claim.suppressed, claim.recovered) == ("texture", 3, True, True)


def test_weakest_attribute_is_judged_against_its_own_chance():
    # 40% on a 2-valued attribute is below chance; 30% on a 10-valued one is well above it.
    result = {"rows": rows("linear", {"stage-1": {"size": 0.40, "texture": 0.30}})}
    assert headline(result, {"size": 0.5, "texture": 0.1}) == \
        "By linear probe, stage 1 suppressed size (40% vs chance 50%)."


def test_headline_does_not_claim_what_the_numbers_do_not_show():
    learned = {"rows": rows("linear", {"stage-1": {"shape": 0.95, "color": 0.90},
                                       "mcl-2": {"shape": 0.95, "color": 0.91}})}
    assert headline(learned, {"shape": 0.1, "color": 0.1}) == \
        "By linear probe, stage 1's weakest attribute is color (90% vs chance 10%); mcl-2 left it at 91%."
    assert headline({"rows": rows("knn", {"stage-1": {"shape": 0.5}})}, CHANCE) is None  # no linear rows
    assert headline({"rows": []}, CHANCE) is None


def test_headline_takes_the_best_mcl_k_and_the_same_k_ensemble():
    result = {"rows": rows("linear", {"stage-1": {"texture": 0.2}, "mcl-2": {"texture": 0.8},
                                      "mcl-3": {"texture": 0.6}, "ensemble-2": {"texture": 0.3},
                                      "ensemble-3": {"texture": 0.9}})}
    assert headline(result, {}) == ("By linear probe, stage 1's weakest attribute is texture (20%); mcl-2 "
                                    "recovered it to 80% (ensemble-2, as many seeds of stage 1: 30%).")


def test_chance_levels_prefer_eval_json_and_fall_back_to_the_data():
    assert chance_levels({"attribute_classes": {"color": 4}}, {"color": 10}) == {"color": 0.25}
    assert chance_levels({}, {"color": 10, "size": 2}) == pytest.approx({"color": 0.1, "size": 0.5})
    assert chance_levels({}, None) == {}


def test_probe_matrices_of_any_kind():
    table = [
        {"representation": "stage-1", "attribute": "shape", "probe": "linear", "accuracy": 0.5},
        {"representation": "stage-1", "attribute": "color", "probe": "linear", "accuracy": 1.0},
        {"representation": "stage-2", "attribute": "shape", "probe": "linear", "accuracy": 0.75},
        {"representation": "clip", "task": "retrieval", "probe": "zeroshot", "recall_at_5": 0.3},
        {"representation": "clip", "probe": "paired", "note": "no score"},
    ]
    matrices = probe_matrices(table)
    names, columns, values = matrices["linear"]
    assert names == ["stage-1", "stage-2"] and columns == ["shape", "color"]
    assert values[0].tolist() == [0.5, 1.0] and values[1, 0] == 0.75 and values[1, 1] != values[1, 1]  # NaN
    assert matrices["zeroshot"][1] == ["retrieval"] and matrices["zeroshot"][2][0, 0] == 0.3
    assert "paired" not in matrices


# The multimodal recipe's eval.json (mcl demo --multimodal, /tmp/exp/demo-cold2): stage 0 fine-tuned by MCL,
# beside finetune-k (plain fine-tuning at equal steps); zero-shot and linear rows for every representation.
FINETUNE_CHANCE = {"shape": 0.1, "texture": 0.1, "color": 0.1, "mark": 0.25}
FINETUNE_RESULT = {"kind": "multimodal", "attribute_classes": {"shape": 10, "texture": 10, "color": 10, "mark": 4},
                   "rows": rows("zeroshot", {
                       "stage-0": {"shape": 0.780, "texture": 0.781, "color": 0.974, "mark": 0.218},
                       "stage-1": {"shape": 0.836, "texture": 0.830, "color": 0.967, "mark": 0.403},
                       "stage-2": {"shape": 0.764, "texture": 0.771, "color": 0.966, "mark": 0.406},
                       "mcl-2": {"shape": 0.842, "texture": 0.836, "color": 0.979, "mark": 0.435},
                       "finetune-1": {"shape": 0.835, "texture": 0.827, "color": 0.987, "mark": 0.351},
                       "finetune-2": {"shape": 0.871, "texture": 0.859, "color": 0.985, "mark": 0.439},
                   }) + rows("linear", {
                       "stage-0": {"shape": 0.891, "texture": 0.863, "color": 0.994, "mark": 0.483},
                       "stage-1": {"shape": 0.927, "texture": 0.897, "color": 0.999, "mark": 0.574},
                       "mcl-2": {"shape": 0.934, "texture": 0.901, "color": 0.999, "mark": 0.650},
                       "finetune-1": {"shape": 0.921, "texture": 0.895, "color": 0.997, "mark": 0.537},
                       "finetune-2": {"shape": 0.939, "texture": 0.904, "color": 0.997, "mark": 0.613},
                   })}


def test_fine_tuning_headline_asks_whether_mcl_beat_plain_fine_tuning():
    assert recipe_of(FINETUNE_RESULT) == Recipe("finetune", "stage-0", "zeroshot")
    assert headline(FINETUNE_RESULT, FINETUNE_CHANCE) == (
        "Stage 0 is weakest at mark (zero-shot 21.8%, chance 25%). MCL: stage-1 40.3% vs plain fine-tuning "
        "(finetune-1, same steps) 35.1% (+5.2 points); mcl-2 43.5% vs finetune-2 43.9% (-0.4 points).")


def test_fine_tuning_headline_falls_back_to_the_linear_probe_without_zero_shot_rows():
    linear = {"rows": [row for row in FINETUNE_RESULT["rows"] if row["probe"] == "linear"]}
    assert recipe_of(linear).probe == "linear"
    assert headline(linear, {**FINETUNE_CHANCE, "mark": 1 / 3}) == (
        "Stage 0 is weakest at mark (linear probe 48.3%, chance 33.3%). MCL: stage-1 57.4% vs plain fine-tuning "
        "(finetune-1, same steps) 53.7% (+3.7 points); mcl-2 65.0% vs finetune-2 61.3% (+3.7 points).")
    only_stage0 = {"rows": rows("zeroshot", {"stage-0": {"mark": 0.2}, "finetune-1": {"shape": 0.5}})}
    assert headline(only_stage0, {}) == "Stage 0 is weakest at mark (zero-shot 20.0%)."  # no pair to compare on mark
    assert find_finetune_claim(RESULT, CHANCE) is None  # a unimodal run is no fine-tuning run


def test_unimodal_headline_is_unchanged_beside_the_new_recipe():
    assert recipe_of(RESULT) == Recipe("ensemble", "stage-1", "linear")
    assert headline(RESULT, CHANCE) == ("By linear probe, stage 1 suppressed texture (42% vs chance 10%); mcl-3 "
                                        "recovered it to 74% (ensemble-3, as many seeds of stage 1: 57%).")
    # finetune-k without a stage 0 keeps the unimodal sentence, naming its baseline for what it is
    result = {"rows": rows("linear", {"stage-1": {"texture": 0.2}, "mcl-2": {"texture": 0.8},
                                      "finetune-2": {"texture": 0.3}})}
    assert recipe_of(result) == Recipe("finetune", "stage-1", "linear")
    assert headline(result, {}) == ("By linear probe, stage 1's weakest attribute is texture (20%); mcl-2 recovered "
                                    "it to 80% (finetune-2, plain training, same steps: 30%).")


def test_fine_tuning_headline_pairs_mcl_k_with_stage0_and_its_concat_baseline():
    # mcl-k holds stage 0 (multimodal.integrate_stage0): its baseline is finetune-concat-k; stage-k faces finetune-k
    result = {"rows": rows("zeroshot", {
        "stage-0": {"color": 0.95, "mark": 0.22}, "stage-1": {"color": 0.9, "mark": 0.40},
        "stage-2": {"color": 0.9, "mark": 0.45}, "mcl-1": {"color": 0.96, "mark": 0.38},
        "mcl-2": {"color": 0.96, "mark": 0.44}, "finetune-1": {"color": 0.97, "mark": 0.35},
        "finetune-2": {"color": 0.97, "mark": 0.41}, "finetune-concat-1": {"color": 0.97, "mark": 0.33},
        "finetune-concat-2": {"color": 0.97, "mark": 0.36}})}
    claim = find_finetune_claim(result, {"color": 0.1, "mark": 0.25})
    assert [(mcl, baseline) for mcl, _, baseline, _ in claim.pairs] == [
        ("stage-1", "finetune-1"), ("mcl-1", "finetune-concat-1"), ("stage-2", "finetune-2"),
        ("mcl-2", "finetune-concat-2")]
    assert "mcl-2 44.0% vs finetune-concat-2 36.0% (+8.0 points)" in headline(result, {"mark": 0.25})


def test_recipe_without_rows_comes_from_the_run_members():
    assert recipe_of({}, ["stage-0", "stage-1", "finetune-1"]) == Recipe("finetune", "stage-0", "linear")
    assert recipe_of({}, ["stage-1", "stage-2", "mcl-2"]) == Recipe(None, "stage-1", "linear")
    assert [counterpart(n) for n in ("finetune-1", "finetune-3", "ensemble-2", "mcl-2", "finetune-concat-3")] == \
        ["stage-1", "mcl-3", "mcl-2", None, "mcl-3"]
    assert counterpart("finetune-3", ["finetune-concat-3"]) == "stage-3"


def test_binomial_interval_is_the_wilson_score_interval():
    from mcl.report.findings import binomial_interval

    low, high = binomial_interval(0.5, 100)  # closed form: 0.5 -/+ 1.96 sqrt(0.25/100 + 1.96^2/40000) / 1.0384
    assert low == pytest.approx(0.4038, abs=2e-4) and high == pytest.approx(0.5962, abs=2e-4)
    assert binomial_interval(1.0, 50)[1] == pytest.approx(1.0) and binomial_interval(1.0, 50)[0] < 0.95
    assert binomial_interval(0.7, 10_000)[1] - binomial_interval(0.7, 10_000)[0] < \
        binomial_interval(0.7, 100)[1] - binomial_interval(0.7, 100)[0]


def test_headline_carries_intervals_and_claims_a_recovery_only_beyond_the_noise():
    big = {**RESULT, "test_rows": 1000}
    assert headline(big, CHANCE) == ("By linear probe, stage 1 suppressed texture (42% ± 3 vs chance 10%); mcl-3 "
                                     "recovered it to 74% ± 3 (ensemble-3, as many seeds of stage 1: 57% ± 3).")
    small = {"kind": "images", "test_rows": 60, "rows": rows("linear", {
        "stage-1": {"shape": 0.90, "texture": 0.42}, "mcl-2": {"shape": 0.90, "texture": 0.49}})}
    claim = find_claim(small, CHANCE)
    assert claim.mcl - claim.stage1 >= 0.05  # a gain the old rule called a recovery
    assert claim.within_noise and not claim.recovered
    assert "no recovery" in headline(small, CHANCE) and "recovered" not in headline(small, CHANCE)
    assert find_claim({**small, "test_rows": 100_000}, CHANCE).recovered  # the same gain on many images counts


def test_fine_tuning_headline_gives_the_margin_of_each_difference():
    text = headline({**FINETUNE_RESULT, "test_rows": 1000}, FINETUNE_CHANCE)
    assert "(+5.2 ± 4.2 points)" in text and "(-0.4 ± 4.3 points)" in text
    assert text.endswith("(± : 95% margin of a difference on 1000 test images)")
