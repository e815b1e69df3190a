# Raw data in: downloads with hashes, local folders, the authors' preprocessed layout (issue 8).


def data_subjects(ds):
    raise WorkflowError(
        f"datasets.{ds}: source '{ds_cfg(ds)['source']}' is not supported yet; use source: demo"
    )


def preprocessed_layout_files(ds, sub):
    raise WorkflowError(f"datasets.{ds}: source 'preprocessed' is not supported yet")
