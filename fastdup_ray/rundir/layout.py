"""The names of a work dir: every file and folder a run writes, in one place, read by the
run, the reduce, the reports, ``dedup`` and ``evaluate`` alike. (A features shard's own
files are named by ``features.shard_names``.)"""

from __future__ import annotations

CONFIG_FILE = "config.json"
# The bad list of inputs rejected while listing (names that are not UTF-8, FIFOs, ...).
LISTING_SHARD = "listing."
SIMILARITY_FILE = "similarity.csv"
OUTLIERS_FILE = "outliers.csv"
COMPONENT_INFO_FILE = "component_info.csv"
CONNECTED_COMPONENTS_FILE = "connected_components.csv"
STATS_FILE = "stats.csv"
STATS_PARQUET = "stats.parquet"
OUTPUT_FILES = (
    SIMILARITY_FILE,
    OUTLIERS_FILE,
    COMPONENT_INFO_FILE,
    CONNECTED_COMPONENTS_FILE,
    STATS_FILE,
    STATS_PARQUET,
)
# At scale the workers write each table as Parquet parts in a folder of the table's name
# (similarity/part-00000.parquet, ...), same columns as the CSV; the CSV is then written
# from the parts only below csv_row_limit rows. results.py reads either form.
TABLE_PARTS = {
    name: name.removesuffix(".csv")
    for name in (SIMILARITY_FILE, OUTLIERS_FILE, COMPONENT_INFO_FILE, CONNECTED_COMPONENTS_FILE, STATS_FILE)
}
# Columns of the similarity parts beyond the CSV's: the row ids that order ties
# (rules.SIMILARITY_ORDER); readers and the CSV leave them out.
PART_ORDER_COLUMNS = ("from_id", "to_id")
# Edges of the kNN as Parquet parts (src, dst, similarity; global row ids).
EDGES_DIR = "edges"
# Scratch of the distributed reduce (keyed exchanges between its tasks), removed at its end.
REDUCE_SCRATCH_DIR = "reduce_scratch"
# The user's annotations (filename, label, split, ...) given to the object API's fd.run,
# kept so a reopened run merges them again.
ANNOTATIONS_FILE = "annotations.parquet"
KEEP_FILE = "keep.csv"
REMOVE_FILE = "remove.csv"
# What dedup --move-to / --symlink-to / --delete did: action,source,target,bytes (appended).
DEDUP_ACTIONS_FILE = "dedup_actions.csv"
INDEX_FILE = "nnf.index"
# A distributed Flat reduce names here the feature shards run modes 3/4 search exactly
# (earlier versions named their index shards, nnf.shard-NNNNN.index, here).
INDEX_MANIFEST = "nnf.index.json"
# Run mode 3 extracts the test images here (a cache under the resume rule).
TEST_FEATURES_DIR = "test_features"
# Run modes 3 and 4 write their tables to this folder, with this file naming the train
# run and the test features, so the train run's own tables stay as they were.
TEST_RESULTS_DIR = "test_results"
TEST_RUN_FILE = "test_run.json"


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"
