"""Realistic, deterministic demo data for the app's schema.

The same seed always gives the same rows, so the demo's snapshots, and the
tests built on them, are reproducible byte for byte.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from backend.db import translate_db_errors
from backend.errors import BadInput
from backend.models import Base, Material, MaterialTag, Section, Supplier

SECTIONS = [
    ("gros-oeuvre", "Gros œuvre"),
    ("menuiserie", "Menuiserie"),
    ("electricite", "Électricité"),
    ("plomberie", "Plomberie & sanitaire"),
    ("peinture", "Peinture et revêtements"),
    ("isolation", "Isolation thermique"),
    ("carrelage", "Carrelage & faïence"),
    ("toiture", "Toiture et étanchéité"),
]
SUPPLIERS = [
    ("Matériaux Dupré", "Lyon"),
    ("Bois & Scierie Lefèvre", "Épinal"),
    ("Électro Façade", "Nantes"),
    ("Céramiques du Midi", "Montpellier"),
    ("Isolants Général", "Besançon"),
    ("Peintures Hélène", "Clermont-Ferrand"),
    ("Quincaillerie Gérard", "Besançon"),
    ("Tuiles Saint-Étienne", "Saint-Étienne"),
]
PRODUCTS = {
    "gros-oeuvre": [
        ("Ciment gris CEM II", "sac"),
        ("Parpaing creux 20 cm", "u"),
        ("Sable à bâtir", "t"),
    ],
    "menuiserie": [
        ("Porte intérieure chêne", "u"),
        ("Fenêtre PVC double vitrage", "u"),
        ("Plinthe pin", "ml"),
    ],
    "electricite": [
        ("Câble R2V 3G2,5", "m"),
        ("Interrupteur va-et-vient", "u"),
        ("Tableau électrique", "u"),
    ],
    "plomberie": [
        ("Tube cuivre Ø14", "m"),
        ("Mitigeur thermostatique", "u"),
        ("Raccord à sertir", "u"),
    ],
    "peinture": [
        ("Peinture acrylique mate", "l"),
        ("Sous-couche universelle", "l"),
        ("Enduit de lissage", "kg"),
    ],
    "isolation": [
        ("Laine de verre 100 mm", "m²"),
        ("Panneau polyuréthane", "m²"),
        ("Ouate de cellulose", "kg"),
    ],
    "carrelage": [
        ("Carreau grès cérame 60x60", "m²"),
        ("Faïence murale blanche", "m²"),
        ("Mortier-colle", "sac"),
    ],
    "toiture": [("Tuile terre cuite", "u"), ("Écran sous-toiture", "m²"), ("Gouttière zinc", "ml")],
}
FINISHES = ["standard", "premium", "éco", "rénovation", "extérieur"]
COLOURS = ["blanc", "gris anthracite", "chêne clair", "terre cuite", "noir mat", None]
TAGS = ["stock", "promo", "éco-label", "sur-commande", "nouveauté"]
VAT_RATES = [Decimal("20.00"), Decimal("10.00"), Decimal("5.50")]
EPOCH = dt.datetime(2026, 1, 5, 8, 30, tzinfo=dt.UTC)


def create_demo(engine: Engine, *, materials: int = 300, force: bool = False, seed: int = 7) -> int:
    """Create the app's tables and fill them; returns the number of materials.

    Refuses to touch a database whose app tables already hold rows unless
    `force`, which drops and recreates those tables (and only those).
    """
    with translate_db_errors(engine):
        if _has_data(engine) and not force:
            raise BadInput(
                "the database already holds data; use --force to replace the demo tables"
            )
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            session.add_all(_rows(random.Random(seed), materials))
    return materials


def _has_data(engine: Engine) -> bool:
    existing = set(inspect(engine).get_table_names())
    with Session(engine) as session:
        for model in (Material, Section, Supplier, MaterialTag):
            if model.__tablename__ in existing and session.scalar(
                select(func.count()).select_from(model)
            ):
                return True
    return False


def _rows(rng: random.Random, count: int) -> list[object]:
    sections = [
        Section(id=i, slug=s, label=lbl, position=i * 10) for i, (s, lbl) in enumerate(SECTIONS, 1)
    ]
    suppliers = [
        Supplier(id=i, name=n, city=c, email=f"contact{i}@fournisseur.example")
        for i, (n, c) in enumerate(SUPPLIERS, 1)
    ]
    rows: list[object] = [*sections, *suppliers]
    for i in range(1, count + 1):
        section = sections[rng.randrange(len(sections))]
        name, unit = rng.choice(PRODUCTS[section.slug])
        finish = rng.choice(FINISHES)
        colour = rng.choice(COLOURS)
        material = Material(
            id=i,
            reference=f"MAT-{i:05d}",
            label=f"{name} — {finish}",
            section_id=section.id,
            supplier_id=None if rng.random() < 0.05 else rng.randrange(1, len(suppliers) + 1),
            unit=unit,
            unit_price=Decimal(rng.randrange(50, 250_000)) / 100,
            quantity=Decimal(rng.randrange(0, 5_000_000)) / 1000,
            vat_rate=rng.choice(VAT_RATES),
            available_from=None
            if rng.random() < 0.1
            else dt.date(2026, 1, 1) + dt.timedelta(rng.randrange(330)),
            updated_at=EPOCH + dt.timedelta(seconds=rng.randrange(300 * 86400)),
            attributes={
                "finition": finish,
                "couleur": colour,
                "poids_kg": rng.randrange(1, 400) / 4,
            },
        )
        material.tags = [MaterialTag(tag=t) for t in sorted(rng.sample(TAGS, rng.randrange(0, 3)))]
        rows.append(material)
    return rows
