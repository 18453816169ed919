def cut(
    piece: bytes,
    mask: int,
    max_records: int,
    max_bytes: int,
    quoted: bool,
    crc: int,
    records: int,
    carried: int,
    prev_cr: bool,
    pending: bool,
    /,
) -> tuple[list[int], list[int], int, int, int, int, int, int, int]: ...
