"""``mcl.report.findings``: probe matrices, chance levels and the headline, from hand-written eval.json."""

import pytest

from mcl.report.findings import chance_levels, find_claim, headline, probe_matrices


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
