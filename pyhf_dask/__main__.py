"""``python -m pyhf_dask`` runs the command line."""

from pyhf_dask.cli import main

if __name__ == "__main__":
    main()
