"""Encoding detection on real bytes (docs/standards.md §8)."""

import pytest

from govlake import encoding


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_gbk_bytes_decode_as_gb18030(tmp_path):
    text = "公民身份号码,姓名\n11010519491231002X,张三\n"
    p = _write(tmp_path, "gbk.csv", text.encode("gbk"))
    assert encoding.detect_file(p) == "gb18030"
    assert p.read_bytes().decode("gb18030") == text


def test_gb18030_four_byte_characters(tmp_path):
    text = "企业名称\n䶮𠀀科技有限公司\n"
    data = text.encode("gb18030")
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")  # these characters are outside GBK
    p = _write(tmp_path, "gb18030.csv", data)
    assert encoding.detect_file(p) == "gb18030"
    assert data.decode("gb18030") == text


def test_utf8_bom(tmp_path):
    text = "登记类型,登记日期\n结婚,2023年5月1日\n"
    p = _write(tmp_path, "bom.csv", text.encode("utf-8-sig"))
    assert p.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert encoding.detect_file(p) == "utf-8-sig"


def test_utf8_that_would_misdecode_as_gb18030_is_read_as_utf8(tmp_path):
    text = "婚姻登记"
    data = text.encode("utf-8")
    assert data.decode("gb18030").startswith("濠氬Щ鐧昏")  # the trap: GB18030 accepts these bytes
    p = _write(tmp_path, "utf8.csv", data)
    assert encoding.detect_file(p) == "utf-8-sig"
    assert encoding.decode_bytes(data) == (text, "utf-8-sig")


def test_undecodable_names_file_and_line(tmp_path):
    data = "a,b\n1,2\n".encode() + b"3,\xff\xff\xff\n"
    p = _write(tmp_path, "bad.csv", data)
    with pytest.raises(encoding.UndecodableError) as e:
        encoding.detect_file(p)
    assert e.value.line == 3
    assert "bad.csv" in str(e.value) and "line 3" in str(e.value) and "encoding.undecodable" in str(e.value)


def test_large_file_detected_in_streaming_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "_CHUNK", 1024)
    text = ("张三,北京市东城区\n" * 2000)
    p = _write(tmp_path, "big.csv", text.encode("gb18030"))
    assert encoding.detect_file(p) == "gb18030"


def test_transcode_to_writes_the_decoded_text_as_utf8(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "_CHUNK", 7)  # multi-byte characters split across chunks
    text = "企业名称,住所\r\n䶮𠀀科技有限公司,福建省厦门市\n\n"
    p = _write(tmp_path, "gb.csv", text.encode("gb18030"))
    out = tmp_path / "gb.utf8"
    assert encoding.detect_file(p, transcode_to=out) == "gb18030"
    assert out.read_bytes() == text.encode("utf-8")


def test_transcode_to_leaves_utf8_files_alone(tmp_path):
    p = _write(tmp_path, "u.csv", "登记类型\n结婚\n".encode("utf-8-sig"))
    out = tmp_path / "u.utf8"
    assert encoding.detect_file(p, transcode_to=out) == "utf-8-sig"
    assert not out.exists()


def test_transcode_to_fails_like_detection_and_leaves_nothing(tmp_path):
    data = "张三\n".encode("gb18030") * 3 + b"\x81\xff\n"
    p = _write(tmp_path, "bad.csv", data)
    out = tmp_path / "bad.utf8"
    with pytest.raises(encoding.UndecodableError) as plain:
        encoding.detect_file(p)
    with pytest.raises(encoding.UndecodableError) as transcoding:
        encoding.detect_file(p, transcode_to=out)
    assert str(transcoding.value) == str(plain.value) and transcoding.value.line == 4
    assert not out.exists()


def test_failure_reported_as_at_the_detection_chunk_size(tmp_path, monkeypatch):
    """Decoding runs in small pieces, but a failure's byte offset and line are those the
    detection chunk size gives (re-run), whatever the piece size."""
    monkeypatch.setattr(encoding, "_CHUNK", 64)
    monkeypatch.setattr(encoding, "_FAST_CHUNK", 5)
    data = ("张三,北京市东城区\n" * 20).encode("gb18030") + b"\x81\xff\n"
    p = _write(tmp_path, "bad.csv", data)
    with pytest.raises(encoding.UndecodableError) as e:
        encoding.detect_file(p, transcode_to=tmp_path / "bad.utf8")
    assert e.value.failures == [encoding._try_stream(p, enc) for enc in encoding.CANDIDATES]
    assert e.value.line == 21
