"""The renovation-materials app's own schema (SQLAlchemy 2 typed ORM).

jsonsnap itself never imports this module to export: it reflects whatever
schema it is pointed at. These models are the app's data and the demo's.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Section(Base):
    __tablename__ = "sections"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200))
    position: Mapped[int]

    materials: Mapped[list[Material]] = relationship(back_populates="section")


class Supplier(Base):
    __tablename__ = "suppliers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))

    materials: Mapped[list[Material]] = relationship(back_populates="supplier")


class Material(Base):
    __tablename__ = "materials"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    label: Mapped[str] = mapped_column(String(300))
    section_id: Mapped[int] = mapped_column(ForeignKey("sections.id"))
    supplier_id: Mapped[int | None] = mapped_column(ForeignKey("suppliers.id"))
    unit: Mapped[str] = mapped_column(String(16))
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    vat_rate: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    available_from: Mapped[dt.date | None]
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    section: Mapped[Section] = relationship(back_populates="materials")
    supplier: Mapped[Supplier | None] = relationship(back_populates="materials")
    tags: Mapped[list[MaterialTag]] = relationship(cascade="all, delete-orphan")


class MaterialTag(Base):
    __tablename__ = "material_tags"

    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
