"""Helpers for driving the official fal clients: a self-signed TLS cert, a server with an extra HTTPS port,
the reference face, and checks on the images the clients return."""

from __future__ import annotations

import base64
import datetime as dt
import io
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from tests.servers import Server, free_port

PULID = "fal-ai/pulid"
FLUX = "fal-ai/flux-pulid"
IMAGE_SIZE = {"width": 64, "height": 64}
JsRunner = Callable[..., Any]  # run_js(case, route, **args) -> the JSON that js/cases.mjs printed


def write_self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A cert for IP:127.0.0.1 and DNS:localhost (what fal-client's https:// URLs are checked against)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        # a self-signed CA that is also the leaf: strict verifiers (Python >= 3.13) want all of these
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True
        )  # digital_signature, key_cert_sign
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass
class TlsServer(Server):
    """`pulid serve --tls-cert --tls-key --tls-port`: HTTP on `port`, HTTPS on `tls_port`."""

    cert: Path | None = None
    tls_key: Path | None = None
    tls_port: int = field(default_factory=free_port)

    @property
    def tls_host(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def start(self, wait_ready: bool = True) -> TlsServer:
        assert self.cert and self.tls_key
        self.extra_args = [*self.extra_args, "--tls-cert", str(self.cert), "--tls-key", str(self.tls_key),
                           "--tls-port", str(self.tls_port)]  # fmt: skip
        super().start(wait_ready)
        self._wait_tls()
        return self

    def _wait_tls(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (
                    httpx.get(
                        f"https://{self.tls_host}/health/live", verify=str(self.cert), timeout=2
                    ).status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"HTTPS port not ready:\n{self.log()}")


def astronaut_png() -> bytes:
    """A real face (skimage's astronaut photo) as PNG: the tiny model still detects and embeds it."""
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def pulid_input(image_url: Any, seed: int) -> dict[str, Any]:
    return {
        "prompt": "portrait, oil painting",
        "reference_images": [{"image_url": image_url}],
        "image_size": IMAGE_SIZE,
        "num_inference_steps": 1,
        "seed": seed,
    }


def assert_pulid_output(output: dict[str, Any], seed: int, verify: str | bool = True) -> None:
    """The output has the seed we sent, the safety checker's verdict, and every image URL downloads as a PNG
    of the requested size."""
    assert output["seed"] == seed
    assert len(output["images"]) == 1
    assert [type(flag) for flag in output["has_nsfw_concepts"]] == [bool]
    for image in output["images"]:
        assert (image["width"], image["height"]) == (IMAGE_SIZE["width"], IMAGE_SIZE["height"])
        r = httpx.get(image["url"], timeout=30, verify=verify)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(r.content)) as png:
            assert png.format == "PNG"
            assert png.size == (IMAGE_SIZE["width"], IMAGE_SIZE["height"])


def flux_input(image_url: Any, seed: int, sync_mode: bool = False) -> dict[str, Any]:
    return {
        "prompt": "portrait, oil painting",
        "reference_image_url": image_url,
        "image_size": IMAGE_SIZE,
        "num_inference_steps": 2,
        "seed": seed,
        "sync_mode": sync_mode,
    }


def assert_flux_output(
    output: dict[str, Any], seed: int, inline: bool = False, verify: str | bool = True
) -> None:
    """fal's flux-pulid output with the (tiny) safety checker's verdict; the image is a PNG of the requested
    size, inline (sync_mode) or stored, and black where the checker flagged it."""
    assert set(output) == {"images", "has_nsfw_concepts", "prompt", "seed", "timings"}
    assert (output["seed"], output["prompt"]) == (seed, "portrait, oil painting")
    [flagged] = output["has_nsfw_concepts"]
    assert isinstance(flagged, bool)
    [image] = output["images"]
    if inline:
        head, _, payload = image["url"].partition(",")
        assert head == "data:image/png;base64"
        data = base64.b64decode(payload)
    else:
        r = httpx.get(image["url"], timeout=30, verify=verify)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        data = r.content
    with Image.open(io.BytesIO(data)) as png:
        assert (png.format, png.size) == ("PNG", (IMAGE_SIZE["width"], IMAGE_SIZE["height"]))
        assert (png.convert("L").getextrema() == (0, 0)) == flagged  # fal blacks out a flagged image


def faceless_data_uri() -> str:
    """A flat grey PNG: no face for the detector to find."""
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (120, 120, 120)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def download(url: str) -> bytes:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    return r.content
