"""The app's session helpers, under the names the application already uses."""

import pytest
import sqlalchemy as sa

from backend.db import db_readonly_session, db_session, make_engine
from backend.models import Base, Section


@pytest.fixture
def app_url(db_url):
    engine = make_engine(db_url, create=True)
    Base.metadata.create_all(engine)
    engine.dispose()
    return db_url


def slugs(url):
    engine = make_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.select(Section.slug).order_by(Section.slug)).scalars().all()
    engine.dispose()
    return found


def test_a_session_commits_its_work(app_url):
    with db_session(app_url) as session:
        session.add(Section(id=1, slug="gros-oeuvre", label="Gros œuvre", position=10))
    assert slugs(app_url) == ["gros-oeuvre"]


def test_a_session_that_fails_keeps_nothing(app_url):
    with pytest.raises(RuntimeError), db_session(app_url) as session:
        session.add(Section(id=1, slug="gros-oeuvre", label="Gros œuvre", position=10))
        session.flush()
        raise RuntimeError("the request failed")
    assert slugs(app_url) == []


def test_a_readonly_session_never_writes(app_url):
    with db_session(app_url) as session:
        session.add(Section(id=1, slug="plomberie", label="Plomberie", position=20))
    with db_readonly_session(app_url) as session:
        assert session.get(Section, 1).label == "Plomberie"
        session.get(Section, 1).label = "changed"
        session.flush()
    assert slugs(app_url) == ["plomberie"]
    with db_readonly_session(app_url) as session:
        assert session.get(Section, 1).label == "Plomberie"


def test_the_sessions_read_the_configured_database(app_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", app_url)
    with db_session() as session:
        session.add(Section(id=3, slug="peinture", label="Peinture", position=30))
    assert slugs(app_url) == ["peinture"]
