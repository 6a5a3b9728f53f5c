import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from defectnet.cli import CONF_DIR
from defectnet.data.presets import (
    converged_dataset,
    preset_dataset,
    records_dir,
    unconverged_samples,
)
from defectnet.datagen.records import read_shards
from defectnet.errors import UserError


def test_a_presets_records_read_back_with_its_unconverged_cells_named():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        ds = preset_dataset("realism")
        left_out = unconverged_samples("realism")
        records = read_shards(records_dir("realism"))
    ok = {r.sample_id: r for r in records if r.status == "ok"}
    assert set(ds.meta["sample_ids"]) == set(ok)
    assert left_out and left_out < set(ok)
    assert all(ok[i].relax["converged"] is False for i in left_out)
    assert all((ok[i].relax or {}).get("converged", True) for i in set(ok) - left_out)


def test_a_name_that_is_no_preset_is_one_clear_line():
    with pytest.raises(UserError, match="'realism_centre' is not a generation preset"):
        converged_dataset("realism_centre")
