"""Who may write which data value in the fake M&E IS: DHIS2's accounts, data sharing and
data capture hierarchy.

Written from dhis2-core's source (2.41.9; the rules are unchanged since 2.37):

- ``dhis-services/dhis-service-acl/.../security/acl/DefaultAclService.java``:
  ``canDataWrite`` holds for a superuser (``haveOverrideAuthority``: ``user.isSuper()``, a
  role with ``ALL``); otherwise the object's sharing must enable data write, publicly or
  through one of the user's groups or the user (``checkSharingPermission``); a category
  option combo needs it on every one of its options, and the default combo (or one
  without options) always passes (``checkOptionComboSharingPermission``).
  ``resetSharing``: an object created without sharing gets public ``rw------`` or
  ``--------``, neither of which writes data.
- ``dhis-api/.../security/acl/AccessStringHelper.java``: an access string is 8 characters,
  metadata read and write, then data read (index 2, ``r``) and data write (index 3, ``w``).
- ``dhis-services/dhis-service-dxf2/.../datavalueset/DataValueSetImportValidator.java``:
  ``validateDataSetIsAccessibleByUser`` (E7601, aborts the set),
  ``validateDataValueCategoryOptionComboAccess`` (E7614, one conflict per option),
  ``validateDataValueAttrOptionComboAccess`` (E7616),
  ``validateDataValueOrgUnitInUserHierarchy`` (E7617: the value's org unit must be one of
  the user's data capture org units or below one, ``OrganisationUnit.isDescendant``; no
  exception for a superuser), in that order after each object's existence check.
- ``DefaultDataValueSetService`` builds the context with
  ``getCurrentUserOrganisationUnits()``: the data capture org units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DATA_WRITE_INDEX = 3


@dataclass
class Account:
    authorities: set[str]
    password: str | None = None
    groups: set[str] = field(default_factory=set)
    """User group UIDs the account is a member of."""
    capture: set[str] | None = None
    """Data capture org unit UIDs; None: the hierarchy's roots (every org unit), as an
    administrator's account is usually set up."""
    uid: str = "gnahatImprt"

    @property
    def is_super(self) -> bool:
        return "ALL" in self.authorities


def access_enabled(access: str | None, index: int = DATA_WRITE_INDEX) -> bool:
    return bool(access) and len(access or "") > index and (access or "")[index] != "-"


def data_writable(account: Account | None, sharing: dict[str, Any] | None) -> bool:
    """``canDataWrite`` for a data set or a category option with this ``sharing``."""
    if account is None or account.is_super:
        return True
    sharing = sharing or {}
    if access_enabled(sharing.get("public")):
        return True
    for uid, grant in (sharing.get("userGroups") or {}).items():
        if (grant.get("id") or uid) in account.groups and access_enabled(grant.get("access")):
            return True
    for uid, grant in (sharing.get("users") or {}).items():
        if (grant.get("id") or uid) == account.uid and access_enabled(grant.get("access")):
            return True
    return False


def path_of(uid: str, parent_of: Callable[[str], str | None]) -> str:
    """``OrganisationUnit.path``: ``/root/.../uid`` by the parent chain."""
    chain = [uid]
    seen = {uid}
    while (parent := parent_of(chain[-1])) is not None and parent not in seen:
        chain.append(parent)
        seen.add(parent)
    return "/" + "/".join(reversed(chain))


def in_hierarchy(
    account: Account | None,
    uid: str,
    parent_of: Callable[[str], str | None],
) -> bool:
    """``isDescendant`` of the account's data capture org units (itself included)."""
    if account is None or account.capture is None:
        return True
    return bool(set(path_of(uid, parent_of).strip("/").split("/")) & account.capture)


def roots(org_units: Iterable[tuple[str, str | None]]) -> list[str]:
    """Org units without a parent, from ``(uid, parent uid)`` pairs."""
    return [uid for uid, parent in org_units if parent is None]
