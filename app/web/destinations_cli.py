"""``flask --app app destinations set|list|rotate|remove|enable`` (app/forwarding/destinations.py)."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from app import resources
from app.forwarding import backlog, destinations
from app.settings import Settings

group = AppGroup("destinations", help="A project's own delivery destination (else UFSE_URL).")


def _settings() -> Settings:
    """The settings of the app the command runs in, bound for the modules it calls."""
    s: Settings = current_app.extensions["observer"].settings
    resources.bind(s)
    return s


def _echo(value: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(value, default=str, sort_keys=True) if as_json else text)


def _when(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch else "-"


@group.command("set")
@click.argument("project")
@click.option("--url", required=True, help="Where the project's finished sessions are POSTed.")
@click.option("--secret", default=None, help="whsec_<base64>; generated and printed when not given.")
@click.option("--no-check", is_flag=True, help="Do not ask the receiver once (the address checks still run).")
@click.option("--json", "as_json", is_flag=True)
def set_(project: str, url: str, secret: str | None, no_check: bool, as_json: bool) -> None:
    """Give PROJECT its own destination. The URL must resolve to public addresses (or ones in
    DESTINATIONS_ALLOWED_NETWORKS), and must not redirect."""
    s = _settings()
    try:
        row = destinations.set_destination(s.database_url, project, url, secret,
                                           allowed_networks=s.destinations_allowed_networks, check=not no_check)
    except destinations.DestinationError as exc:
        raise click.ClickException(str(exc)) from None
    text = f"destination of {project}: {row['url']}"
    if not secret:
        text += f"\nsecret (give it to the receiver; shown once): {row['secret']}"
    if row["warning"]:
        text += f"\nwarning: {row['warning']}"
    _echo(row if not secret else {**row, "secret": "(as given)"}, as_json, text)


@group.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Every project destination (URLs redacted), its state and its backlog."""
    s = _settings()
    for r in destinations.list_destinations(s.database_url):
        est = backlog.estimate(r["project"])
        r["backlog"] = est.deliveries
        state = "enabled" if r["enabled"] else f"DISABLED since {r['disabled_at']:%Y-%m-%dT%H:%M:%SZ} " \
                                                f"({r['disabled_reason']})"
        overlap = f", old secret signs until {_when(r['overlap_ends'])}" if r["overlap_ends"] else ""
        _echo(r, as_json, f"{r['project']}\t{r['url']}\t{state}\t{r['secrets_signing']} secret(s) signing{overlap}"
                          f"\tbacklog {est.deliveries}")


@group.command("rotate")
@click.argument("project")
@click.option("--json", "as_json", is_flag=True)
def rotate(project: str, as_json: bool) -> None:
    """A new secret for PROJECT; the old one keeps signing for SECRET_ROTATION_OVERLAP."""
    s = _settings()
    try:
        out = destinations.rotate(s.database_url, project, s.secret_rotation_overlap)
    except destinations.DestinationError as exc:
        raise click.ClickException(str(exc)) from None
    _echo(out, as_json, f"new secret of {project} (shown once): {out['secret']}\n"
                        f"every delivery is signed with it and the old one until {_when(out['old_secrets_until'])}")


@group.command("remove")
@click.argument("project")
def remove(project: str) -> None:
    """Forget PROJECT's destination: its sessions go to UFSE_URL from then on, its backlog too."""
    s = _settings()
    if not destinations.remove(s.database_url, project):
        raise click.ClickException(f"project {project} has no destination of its own")
    moved = backlog.replay(project)
    click.echo(f"destination of {project} removed; it uses UFSE_URL" + (f"; {moved} parked deliveries released"
                                                                         if moved else ""))


@group.command("enable")
@click.argument("project")
@click.option("--json", "as_json", is_flag=True)
def enable(project: str, as_json: bool) -> None:
    """Enable a disabled destination and replay its backlog, oldest first, under FORWARD_DRAIN_RATE."""
    s = _settings()
    if not any(r["project"] == project for r in destinations.list_destinations(s.database_url)):
        raise click.ClickException(f"project {project} has no destination of its own")
    est = backlog.estimate(project)
    changed = destinations.set_enabled(s.database_url, project, True)
    # A fresh start: the failures that disabled it are forgotten, the circuit is closed.
    from app.forwarding import parked

    parked.circuit_named(f"project:{project}").success()
    moved = backlog.replay(project)
    out = {"project": project, "was_disabled": changed, "deliveries": moved,
           "oldest_age_s": round(est.oldest_age_s), "drain_s": round(moved / max(1, s.forward_drain_rate), 1)}
    _echo(out, as_json, f"destination of {project} enabled; replaying {moved} parked deliveries, oldest first "
                        f"(oldest parked {est.oldest_age_s / 3600:.1f} h ago): about {out['drain_s']} s at "
                        f"FORWARD_DRAIN_RATE {s.forward_drain_rate}/s")
