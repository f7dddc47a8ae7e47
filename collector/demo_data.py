"""The demo registry: 18 territorial centres, 4 core services, pseudonymous staff.

``python -m collector.demo_data DIR`` regenerates the shipped CSV files in
``collector/demo_registry/`` (a test checks they are up to date). Names of
people are pseudonyms; centre names and coordinates are approximate public facts.
"""

from __future__ import annotations

import csv
import hashlib
import random
import sys
from pathlib import Path

from collector.registry import COLUMNS

SHIPPED = Path(__file__).resolve().parent / "demo_registry"

# code, marz, community hy, community en, district/locality note, lat, lon
CENTRES = [
    ("AG-ASHTARAK", "AM-AG", "Աշտարակ", "Ashtarak", 40.299, 44.362),
    ("AR-ARTASHAT", "AM-AR", "Արտաշատ", "Artashat", 39.952, 44.550),
    ("AR-MASIS", "AM-AR", "Մասիս", "Masis", 40.066, 44.436),
    ("AR-ARARAT", "AM-AR", "Արարատ", "Ararat", 39.830, 44.700),
    ("AV-ARMAVIR", "AM-AV", "Արմավիր", "Armavir", 40.155, 44.038),
    ("GR-GAVAR", "AM-GR", "Գավառ", "Gavar", 40.359, 45.127),
    ("KT-HRAZDAN", "AM-KT", "Հրազդան", "Hrazdan", 40.497, 44.766),
    ("LO-VANADZOR", "AM-LO", "Վանաձոր", "Vanadzor", 40.813, 44.488),
    ("SH-GYUMRI1", "AM-SH", "Գյումրի", "Gyumri", 40.789, 43.847),
    ("SH-GYUMRI2", "AM-SH", "Գյումրի", "Gyumri", 40.785, 43.835),
    ("SU-KAPAN", "AM-SU", "Կապան", "Kapan", 39.207, 46.405),
    ("TV-IJEVAN", "AM-TV", "Իջևան", "Ijevan", 40.879, 45.148),
    ("VD-YEGHEGNADZOR", "AM-VD", "Եղեգնաձոր", "Yeghegnadzor", 39.761, 45.333),
    ("ER-AVAN", "AM-ER", "Ավան", "Avan", 40.215, 44.577),
    ("ER-NUBARASHEN", "AM-ER", "Նուբարաշեն", "Nubarashen", 40.117, 44.560),
    ("ER-EREBUNI", "AM-ER", "Էրեբունի", "Erebuni", 40.140, 44.535),
    ("ER-AJAPNYAK", "AM-ER", "Աջափնյակ", "Ajapnyak", 40.203, 44.455),
    ("ER-DAVTASHEN", "AM-ER", "Դավթաշեն", "Davtashen", 40.226, 44.488),
]

SERVICES = [
    ("SOC_SECURITY", "Սոցիալական ապահովություն", "Social security (pensions, benefits)"),
    ("EMPLOYMENT", "Զբաղվածություն", "Employment"),
    ("SOC_ASSISTANCE", "Սոցիալական աջակցություն", "Social assistance (family benefit)"),
    (
        "MED_SOC_ASSESSMENT",
        "Բժշկասոցիալական փորձաքննություն",
        "Medical-social assessment (disability)",
    ),
]

POSITIONS = ["Մասնագետ", "Առաջատար մասնագետ", "Սոցիալական աշխատող", "Գլխավոր մասնագետ"]
VALID_FROM = "2026-01-01"


def device_id(centre_code: str, desk: int) -> str:
    return f"am-{centre_code.lower()}-d{desk:02d}"


def badge_for(employee_code: str) -> str:
    return hashlib.sha256(employee_code.encode()).hexdigest()[:10].upper()


def generate(seed: int = 2026) -> dict[str, list[tuple[object, ...]]]:
    rng = random.Random(seed)
    rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in COLUMNS}
    for code, marz, comm_hy, comm_en, lat, lon in CENTRES:
        number = code[-1] if code[-1].isdigit() else ""
        suffix_hy = f" {number}" if number else ""
        suffix_en = f" {number}" if number else ""
        rows["centres"].append(
            (
                code,
                f"Տարածքային կենտրոն «{comm_hy}{suffix_hy}»",
                f"{comm_en}{suffix_en} territorial centre",
                marz,
                comm_hy,
                "",
                lat,
                lon,
                "",  # opening hours: the usual office hours
            )
        )
    for s in SERVICES:
        rows["services"].append(s)
    for code, *_ in CENTRES:
        staff = rng.randint(4, 12)
        for i in range(1, staff + 1):
            emp = f"{code}-E{i:02d}"
            rows["employees"].append((emp, code, f"Աշխատակից {i:02d}", rng.choice(POSITIONS)))
            rows["badges"].append((badge_for(emp), emp, VALID_FROM, ""))
            dev = device_id(code, i)
            rows["devices"].append((dev, "buttons", 4, VALID_FROM, ""))
            service = SERVICES[(i - 1) % len(SERVICES)][0]
            rows["assignments"].append((dev, code, f"{i:02d}", emp, service, VALID_FROM, ""))
    return rows


def write(path: Path, seed: int = 2026) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, rows in generate(seed).items():
        with (path / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(COLUMNS[name])
            w.writerows(rows)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else SHIPPED)
