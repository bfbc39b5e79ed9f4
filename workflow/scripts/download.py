"""Download the release archive; it appears only if its sha256 matches (or is recorded on first use)."""
from fusedmlp import logs
from fusedmlp.data.dataset import file_sha256
from fusedmlp.data.readers import download
from fusedmlp.io import write_text

log = logs.setup(snakemake.log[0])
url, sha = snakemake.params.url, snakemake.params.sha256
log.info("downloading %s", url)
download(url, snakemake.output.archive, sha)
got = file_sha256(snakemake.output.archive)
write_text(snakemake.output.checksum, f"{got}  {url}\n")
if sha is None:
    log.warning("no sha256 was pinned: the archive has sha256 %s; pin it as "
                "data.release.sha256 in the configuration", got)
else:
    log.info("checksum verified (%s), wrote %s", got, snakemake.output.archive)
