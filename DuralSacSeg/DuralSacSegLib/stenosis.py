"""Central canal stenosis categories from the dural sac cross-sectional area (DSCA), with their sources.

A :class:`StenosisScheme` is an ordered list of :class:`StenosisCriterion` (``area < upper_mm2`` → ``label``); the first
criterion whose bound the area falls under gives the category, otherwise the scheme's ``normal_label``. Bounds are
strict (*area < bound*): an area exactly on a threshold belongs to the milder category (75.0 mm² is "relative", not
"absolute", under :data:`BOLENDER_SCHONSTROM_1985`). Schemes are plain frozen dataclasses, so any other threshold set
can be built with :func:`make_scheme` and passed to the DSCA table.

Sources (only what the papers' abstracts state; anything else is marked):

- **Bolender NF, Schönström NS, Spengler DM.** Role of computed tomography and myelography in the diagnosis of central
  spinal stenosis. *J Bone Joint Surg Am* 1985;67:240–246; and **Schönström NS, Bolender NF, Spengler DM.** The
  pathomorphology of spinal stenosis as seen on CT scans of the lumbar spine. *Spine* 1985;10:806–811.
  CT measurements of the dural sac area: < 75 mm² "absolute" and 75–100 mm² "relative" central stenosis. This is the
  reading of these papers used throughout the later literature; the exact wording of the cut-offs (e.g. whether the
  relative band is written 75–100 or 76–100 mm²) is quoted from secondary sources, not checked against the originals.
  Default scheme (:data:`BOLENDER_SCHONSTROM_1985`).
- **Hamanishi C, Matukura N, Fujita M, Tomihara M, Tanaka S.** Cross-sectional area of the stenotic lumbar dural tube
  measured from the transverse views of magnetic resonance imaging. *J Spinal Disord* 1994;7:388–393 (not *Spine*).
  The abstract reports that a dural tube cross-sectional area < 100 mm² at more than two of
  three levels (L2/3, L3/4, L4/5) was highly associated with intermittent claudication — a multi-level criterion; the
  per-slice category :data:`HAMANISHI_1994` only applies the 100 mm² bound and does not check the level count.
  (Journal, volume and pages from memory and the publisher's index entry; the finding is quoted from the abstract.)
- **Steurer J, Roner S, Gnannt R, Hodler J; LumbSten Research Collaboration.** Quantitative radiologic criteria for
  the diagnosis of lumbar spinal stenosis: a systematic literature review. *BMC Musculoskelet Disord* 2011;12:175,
  doi:10.1186/1471-2474-12-175. The review found the most often reported measures for central stenosis to be the
  antero-posterior diameter (< 10 mm) and the cross-sectional area (< 70 mm²) of the spinal canal
  (:data:`STEURER_2011`). Note: the abstract says "spinal canal"; applying the 70 mm² bound to the dural sac area
  follows common usage and is an interpretation.

These are radiological descriptors, not a diagnosis: symptoms correlate poorly with DSCA (see the reviews above).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from spinemorph.errors import InputError

#: category label of an area that is not available (empty slice, NaN)
NOT_APPLICABLE = ""

BOLENDER_1985 = (
    "Bolender NF, Schönström NS, Spengler DM. Role of computed tomography and myelography in the diagnosis of "
    "central spinal stenosis. J Bone Joint Surg Am 1985;67:240-6"
)
SCHONSTROM_1985 = (
    "Schönström NS, Bolender NF, Spengler DM. The pathomorphology of spinal stenosis as seen on CT scans of the "
    "lumbar spine. Spine 1985;10:806-11"
)
HAMANISHI_1994_REF = (
    "Hamanishi C, Matukura N, Fujita M, Tomihara M, Tanaka S. Cross-sectional area of the stenotic lumbar dural tube "
    "measured from the transverse views of magnetic resonance imaging. J Spinal Disord 1994;7:388-93"
)
STEURER_2011_REF = (
    "Steurer J, Roner S, Gnannt R, Hodler J. Quantitative radiologic criteria for the diagnosis of lumbar spinal "
    "stenosis: a systematic literature review. BMC Musculoskelet Disord 2011;12:175"
)


@dataclasses.dataclass(frozen=True)
class StenosisCriterion:
    """One category: areas strictly below ``upper_mm2`` (and not in a stricter category) get ``label``.

    Attributes
    ----------
    label : str
        Category name written to the table (e.g. ``"absolute stenosis"``).
    upper_mm2 : float
        Exclusive upper bound of the area in mm².
    citation : str
        Source of the threshold.
    """

    label: str
    upper_mm2: float
    citation: str = ""


@dataclasses.dataclass(frozen=True)
class StenosisScheme:
    """An ordered set of thresholds with the label for areas above all of them.

    Attributes
    ----------
    name : str
        Short key of the scheme (``"bolender1985"``).
    criteria : tuple of StenosisCriterion
        Sorted by increasing ``upper_mm2`` (checked).
    normal_label : str
        Category of an area at or above the largest bound.
    note : str
        Caveats printed with the output.
    """

    name: str
    criteria: tuple[StenosisCriterion, ...]
    normal_label: str = "no stenosis"
    note: str = ""

    def __post_init__(self):
        bounds = [c.upper_mm2 for c in self.criteria]
        if not bounds:
            raise InputError(f"stenosis scheme {self.name!r} has no thresholds; give at least one")
        if any(not math.isfinite(b) or b <= 0 for b in bounds):
            raise InputError(f"stenosis scheme {self.name!r}: thresholds must be positive finite areas in mm², got {bounds}")
        if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
            raise InputError(f"stenosis scheme {self.name!r}: thresholds must increase strictly, got {bounds}")

    def classify(self, area_mm2: float | None) -> str:
        """Category of ``area_mm2``; :data:`NOT_APPLICABLE` (``""``) for None / NaN / area 0 (no dural sac found)."""
        if area_mm2 is None:
            return NOT_APPLICABLE
        a = float(area_mm2)
        if not math.isfinite(a) or a <= 0:
            return NOT_APPLICABLE
        for c in self.criteria:
            if a < c.upper_mm2:
                return c.label
        return self.normal_label

    @property
    def citations(self) -> list[str]:
        """Distinct citations of the scheme, in order."""
        out: list[str] = []
        for c in self.criteria:
            for ref in c.citation.split(" | "):
                if ref and ref not in out:
                    out.append(ref)
        return out

    def to_dict(self) -> dict:
        """JSON-ready description (written into every DSCA table)."""
        return {
            "name": self.name,
            "rule": "first category whose bound the area is strictly below; otherwise normal_label",
            "categories": [{"label": c.label, "area_below_mm2": c.upper_mm2, "citation": c.citation} for c in self.criteria],
            "normal_label": self.normal_label,
            "citations": self.citations,
            "note": self.note,
        }


#: default: < 75 mm² absolute, 75–100 mm² relative stenosis (Bolender et al. 1985; Schönström et al. 1985)
BOLENDER_SCHONSTROM_1985 = StenosisScheme(
    name="bolender1985",
    criteria=(
        StenosisCriterion("absolute stenosis", 75.0, f"{BOLENDER_1985} | {SCHONSTROM_1985}"),
        StenosisCriterion("relative stenosis", 100.0, f"{BOLENDER_1985} | {SCHONSTROM_1985}"),
    ),
    note="CT-derived thresholds applied to the MR dural sac area; a radiological descriptor, not a diagnosis.",
)

#: < 100 mm² (Hamanishi et al. 1994; their criterion required it at more than two of L2/3, L3/4, L4/5)
HAMANISHI_1994 = StenosisScheme(
    name="hamanishi1994",
    criteria=(StenosisCriterion("stenosis", 100.0, HAMANISHI_1994_REF),),
    note=(
        "Hamanishi et al. associated < 100 mm2 at more than two of three levels (L2/3, L3/4, L4/5) with intermittent "
        "claudication; this per-slice category applies only the area bound."
    ),
)

#: < 70 mm² (most often reported central-stenosis area criterion in the review of Steurer et al. 2011)
STEURER_2011 = StenosisScheme(
    name="steurer2011",
    criteria=(StenosisCriterion("stenosis", 70.0, STEURER_2011_REF),),
    note="The review reports < 70 mm2 for the cross-sectional area of the spinal canal; applied here to the dural sac area.",
)

#: available schemes by name
SCHEMES: dict[str, StenosisScheme] = {s.name: s for s in (BOLENDER_SCHONSTROM_1985, HAMANISHI_1994, STEURER_2011)}

DEFAULT_SCHEME = BOLENDER_SCHONSTROM_1985


def make_scheme(
    thresholds: Mapping[str, float] | Sequence[tuple[str, float]],
    name: str = "custom",
    normal_label: str = "no stenosis",
    citation: str = "user-defined threshold",
) -> StenosisScheme:
    """Build a scheme from ``{label: upper bound mm²}`` (any order; sorted by bound).

    Examples
    --------
    >>> make_scheme({"severe": 50, "moderate": 80}).classify(60)
    'moderate'
    """
    items = list(thresholds.items()) if isinstance(thresholds, Mapping) else list(thresholds)
    try:
        items = sorted(((str(k), float(v)) for k, v in items), key=lambda kv: kv[1])
    except (TypeError, ValueError):
        raise InputError(f"stenosis thresholds must map category names to areas in mm², got {thresholds!r}") from None
    return StenosisScheme(name, tuple(StenosisCriterion(k, v, citation) for k, v in items), normal_label)


def get_scheme(scheme: str | StenosisScheme | None) -> StenosisScheme:
    """Return ``scheme`` itself, the named scheme from :data:`SCHEMES`, or the default for None."""
    if scheme is None:
        return DEFAULT_SCHEME
    if isinstance(scheme, StenosisScheme):
        return scheme
    try:
        return SCHEMES[str(scheme).lower()]
    except KeyError:
        raise InputError(f"unknown stenosis scheme {scheme!r}; choose one of {', '.join(SCHEMES)}") from None


def classify_dsca(area_mm2: float | None, scheme: str | StenosisScheme | None = None) -> str:
    """Stenosis category of one dural sac area (mm²) under ``scheme`` (default: Bolender/Schönström 1985)."""
    return get_scheme(scheme).classify(area_mm2)
