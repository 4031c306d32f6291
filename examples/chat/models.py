"""The chat's one table: every message a room has heard, kept by the publish hook."""

from __future__ import annotations

from datetime import UTC, datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Index, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()

# The most a page gets at once, on opening a room or asking for older messages.
PAGE_SIZE = 50


class Message(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    room: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    # UTC; SQLite gives it back without its zone, so as_dict writes the "Z" itself.
    created: Mapped[datetime] = mapped_column(default=lambda: datetime.now(UTC))

    # "The messages of a room before this id", the one query the chat makes, reads this index.
    __table_args__ = (Index("ix_message_room_id", "room", "id"),)

    def as_dict(self) -> dict:
        """What a page is sent, live (as the published data) and from the `older` RPC alike."""
        return {
            "id": self.id,
            "user": self.user,
            "text": self.text,
            "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @classmethod
    def page_before(cls, room: str, before: int | None) -> tuple[list[Message], bool]:
        """Up to PAGE_SIZE messages of `room` older than id `before` (the newest when None),
        newest last, and whether there are older ones still."""
        query = select(cls).where(cls.room == room).order_by(cls.id.desc()).limit(PAGE_SIZE + 1)
        if before is not None:
            query = query.where(cls.id < before)
        found = db.session.scalars(query).all()
        return list(reversed(found[:PAGE_SIZE])), len(found) > PAGE_SIZE
