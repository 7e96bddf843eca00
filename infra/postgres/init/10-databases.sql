-- Runs once, when the Postgres volume is first initialised (docker-entrypoint-initdb.d), as POSTGRES_USER.
-- POSTGRES_DB (spex) already exists: the spex metadata DB. MLflow and Prefect get a database each,
-- so their migrations (both use Alembic and an alembic_version table) never meet.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
