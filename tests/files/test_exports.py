import pulid_server.files as files


def test_public_names_are_exactly_all() -> None:
    public = {name for name in dir(files) if not name.startswith("_")}
    modules = {"blobs", "datauri", "fetch", "images"}
    assert public - modules == set(files.__all__)
