"""Real records of CIRR and FashionIQ, as the datasets' own repositories show them.

The course prints them beside the toy records (notebook 01), and the tests check that the toy
generator writes exactly their fields; no loader reads them.
"""

# One real record per file kind, as datasets.md quotes them: the schema the toy data must match.
# (The FashionIQ split example only shows the shape: a plain list of ASINs.)
CIRR_EXAMPLE_RECORD = {
    "pairid": 12060,
    "reference": "dev-244-0-img0",
    "target_hard": "dev-1028-1-img1",
    "target_soft": {"dev-1028-1-img1": 1.0},
    "caption": "show three bottles of soft drink",
    "img_set": {
        "id": 36,
        "members": [
            "dev-430-3-img0",
            "dev-63-0-img1",
            "dev-1028-1-img1",
            "dev-1028-2-img1",
            "dev-244-0-img0",
            "dev-1028-2-img0",
        ],
        "reference_rank": 2,
        "target_rank": 3,
    },
}
CIRR_TEST_EXAMPLE_RECORD = {
    "pairid": 12063,
    "reference": "test1-147-1-img1",
    "caption": "remove all but one dog and add a woman hugging it",
    "img_set": {
        "id": 1,
        "members": [
            "test1-147-1-img1",
            "test1-1001-2-img0",
            "test1-83-1-img1",
            "test1-359-0-img1",
            "test1-906-0-img1",
            "test1-83-0-img1",
        ],
        "reference_rank": 3,
    },
}
CIRR_SPLIT_EXAMPLE = {
    "dev-244-0-img0": "./dev/dev-244-0-img0.png",
    "train-11041-2-img0": "./train/34/train-11041-2-img0.png",
}
FASHIONIQ_EXAMPLE_RECORD = {
    "target": "B0084Y8XIU",
    "candidate": "B005X4PL1G",
    "captions": ["is shiny and silver with shorter sleeves", "fit and flare"],
}
FASHIONIQ_TEST_EXAMPLE_RECORD = {
    "candidate": "B005X4PL1G",
    "captions": ["is shiny and silver with shorter sleeves", "fit and flare"],
}
FASHIONIQ_SPLIT_EXAMPLE = ["B0084Y8XIU", "B005X4PL1G"]
