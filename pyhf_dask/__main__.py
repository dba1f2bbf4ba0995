"""``python -m pyhf_dask`` runs the command line (as the ``pyhf-dask`` script does)."""

from pyhf_dask.cli import run

if __name__ == "__main__":
    run()
