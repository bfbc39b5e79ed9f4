"""Composition table and overview figure of a dataset."""
from fusedmlp import logs
from fusedmlp.data import dataset
from fusedmlp.data.splits import load_split
from fusedmlp.plots import dataset_overview
from fusedmlp.tables import write_table

log = logs.setup(snakemake.log[0])
ds = dataset.load(snakemake.input.dataset)
split = load_split(snakemake.input.split, len(ds))
rows = dataset.summary(ds)
for name, idx in split.items():
    rows.append(dict(fidelity="all", config_type=f"split:{name}", configurations=len(idx)))
write_table(rows, csv_path=snakemake.output.table, markdown_path=snakemake.output.markdown,
            title=f"Dataset {snakemake.wildcards.stem}")
dataset_overview(ds, snakemake.output.figure, title=snakemake.wildcards.stem)
log.info("summarised %d configurations", len(ds))
