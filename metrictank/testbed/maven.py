"""Resolve a server's runtime class path from Maven Central into a cache outside the repo.

The servers are ordinary Java artifacts, so Maven already knows how to fetch them with every transitive
dependency. We generate a throwaway pom per artifact and let `dependency:copy-dependencies` flatten the
graph into one ``lib/`` directory; a marker file makes later runs free (no Maven start, no network).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

# Pinned so that the cache key is stable and a second run never needs the network; bump deliberately.
KAFKA_VERSION = "4.3.1"
CASSANDRA_VERSION = "5.0.9"

DEPENDENCY_PLUGIN_VERSION = "3.8.1"
MARKER = ".complete.json"


@dataclass(frozen=True)
class Artifact:
    """A server artifact plus the transitive dependencies we refuse to put on its class path."""

    name: str
    group_id: str
    artifact_id: str
    version: str
    exclusions: tuple[str, ...] = field(default=())  # "groupId:artifactId", "*" allowed
    extras: tuple[str, ...] = field(default=())  # "groupId:artifactId:version" added beside it

    @property
    def cache_key(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Resolved:
    artifact: Artifact
    lib_dir: Path
    jars: tuple[Path, ...]
    downloaded: bool  # False when served from our cache
    seconds: float

    @property
    def classpath(self) -> str:
        return os.pathsep.join(str(j) for j in self.jars)


def cache_root() -> Path:
    """Lives outside the work tree: jars are large and shared by every checkout and every agent."""
    env = os.environ.get("METRICTANK_TESTBED_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "metrictank-testbed"


def render_pom(artifact: Artifact) -> str:
    exclusions = "".join(
        "<exclusion><groupId>{}</groupId><artifactId>{}</artifactId></exclusion>".format(
            *(escape(p) for p in ex.split(":", 1))
        )
        for ex in artifact.exclusions
    )
    extras = "".join(
        "\n    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *(escape(p) for p in extra.split(":", 2))
        )
        for extra in artifact.extras
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>metrictank.testbed</groupId>
  <artifactId>{escape(artifact.name)}-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{escape(artifact.group_id)}</groupId>
      <artifactId>{escape(artifact.artifact_id)}</artifactId>
      <version>{escape(artifact.version)}</version>
      <exclusions>{exclusions}</exclusions>
    </dependency>{extras}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _cached(lib_dir: Path, marker: Path, artifact: Artifact) -> tuple[Path, ...] | None:
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if info.get("pom") != render_pom(artifact):
        return None
    jars = tuple(sorted(lib_dir.glob("*.jar")))
    return jars if len(jars) == info.get("jars") else None


def resolve(artifact: Artifact, *, log=print) -> Resolved:
    """Return the artifact's runtime jars, running Maven only if the cache is not complete.

    A file lock makes concurrent callers (parallel test sessions, two agents) wait for one download
    instead of racing on the same directory.
    """
    t0 = time.perf_counter()
    home = cache_root() / artifact.cache_key
    lib_dir = home / "lib"
    marker = home / MARKER
    jars = _cached(lib_dir, marker, artifact)
    if jars is not None:
        return Resolved(artifact, lib_dir, jars, False, time.perf_counter() - t0)

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        jars = _cached(lib_dir, marker, artifact)
        if jars is not None:  # someone else finished while we waited
            return Resolved(artifact, lib_dir, jars, False, time.perf_counter() - t0)
        log(
            f"testbed: resolving {artifact.group_id}:{artifact.artifact_id}:{artifact.version} with Maven ..."
        )
        (home / "pom.xml").write_text(render_pom(artifact))
        staging = home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            shutil.which("mvn") or "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise RuntimeError(f"Maven failed for {artifact.cache_key} (exit {proc.returncode}):\n{tail}")
        shutil.rmtree(lib_dir, ignore_errors=True)
        staging.rename(lib_dir)
        jars = tuple(sorted(lib_dir.glob("*.jar")))
        seconds = time.perf_counter() - t0
        marker.write_text(
            json.dumps(
                {
                    "version": artifact.version,
                    "pom": render_pom(artifact),
                    "jars": len(jars),
                    "seconds": round(seconds, 1),
                    "resolved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        )
        log(f"testbed: {artifact.cache_key}: {len(jars)} jars in {seconds:.1f}s -> {lib_dir}")
        return Resolved(artifact, lib_dir, jars, True, seconds)
