"""People who use the web UI: roles and what each role may do.

Roles are ordered `viewer < editor < approver < admin` by how much of the platform a person
sees and changes, but permissions are granted explicitly, not by rank: an approver
(compliance) approves what an editor (product manager) wrote and does not edit it, so that
no one approves their own change. The matrix (`ROLE_PERMISSIONS`):

| permission          | viewer | editor | approver | admin |
|---------------------|:------:|:------:|:--------:|:-----:|
| view                |   x    |   x    |    x     |   x   |
| edit experiments    |        |   x    |          |   x   |
| operate experiments |        |   x    |          |   x   |
| approve experiments |        |        |    x     |   x   |
| view audit log      |        |        |    x     |   x   |
| manage users        |        |        |          |   x   |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final


class Role(enum.StrEnum):
    """A UI user's role, in rank order."""

    VIEWER = "viewer"
    EDITOR = "editor"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in `viewer < editor < approver < admin`."""
        return list(Role).index(self)


class Permission(enum.StrEnum):
    """Something a UI route or action requires."""

    VIEW = "view"
    EDIT_EXPERIMENTS = "edit_experiments"
    OPERATE_EXPERIMENTS = "operate_experiments"
    APPROVE_EXPERIMENTS = "approve_experiments"
    VIEW_AUDIT_LOG = "view_audit_log"
    MANAGE_USERS = "manage_users"


ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.EDITOR: frozenset(
        {Permission.VIEW, Permission.EDIT_EXPERIMENTS, Permission.OPERATE_EXPERIMENTS}
    ),
    Role.APPROVER: frozenset(
        {Permission.VIEW, Permission.APPROVE_EXPERIMENTS, Permission.VIEW_AUDIT_LOG}
    ),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True)
class UserIdentity:
    """A signed-in person.

    Attributes:
        user_id: row id.
        username: login name (lower case).
        role: their role.
    """

    user_id: int
    username: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names this person."""
        return f"user:{self.username}"

    def may(self, permission: Permission) -> bool:
        """Whether the role grants `permission`."""
        return permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True)
class UiSession:
    """A valid UI session as a request sees it.

    Attributes:
        user: who is signed in.
        csrf_token: the token every state-changing form of this session must carry.
        expires_at: the absolute end of the session.
    """

    user: UserIdentity
    csrf_token: str
    expires_at: datetime
