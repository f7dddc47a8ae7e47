"""events name registry rows without foreign keys; the registry refuses DELETE

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01

Three foreign keys on ``events`` cost PostgreSQL one trigger lookup each per inserted
row: about a third of ingest time, measured. The ids come from the registry snapshot
read in the same transaction, and the registry only ever adds rows (a person who
leaves gets an end date, not a deletion), so the same guarantee is kept cheaper: a
trigger refuses DELETE on centres, employees and services, on both databases.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

FKS = (
    ("fk_events_centre_id_centres", "centres", "centre_id"),
    ("fk_events_employee_id_employees", "employees", "employee_id"),
    ("fk_events_service_id_services", "services", "service_id"),
)
REGISTRY = ("centres", "employees", "services")
MESSAGE = "the registry keeps every row: end it (valid_to) instead of deleting it"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, _, _ in FKS:
            batch.drop_constraint(name, type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION gnahat_registry_keeps_rows() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
        )
        for table in REGISTRY:
            op.execute(
                f"CREATE TRIGGER {table}_keep_rows BEFORE DELETE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION gnahat_registry_keeps_rows()"
            )
    else:
        for table in REGISTRY:
            op.execute(
                f"CREATE TRIGGER {table}_keep_rows BEFORE DELETE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def downgrade() -> None:
    for table in REGISTRY:
        op.execute(
            f"DROP TRIGGER {table}_keep_rows"
            + (f" ON {table}" if op.get_bind().dialect.name == "postgresql" else "")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gnahat_registry_keeps_rows()")
    with op.batch_alter_table("events") as batch:
        for name, table, col in FKS:
            batch.create_foreign_key(name, table, [col], ["id"])
