import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prefect.states import Failed

from loopline.errors import SourceNotFound
from tasks.retry import retry_on_transient_io

pytestmark = pytest.mark.unit


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (client_error("SlowDown"), True),
        (client_error("InternalError"), True),
        (client_error("InvalidAccessKeyId"), False),
        (client_error("NoSuchBucket"), False),
        (SourceNotFound("no such folder"), False),
        (ValueError("bad parameter"), False),
    ],
)
def test_only_transient_io_is_retried(exc: Exception, retry: bool) -> None:
    assert retry_on_transient_io(None, None, Failed(data=exc)) is retry
