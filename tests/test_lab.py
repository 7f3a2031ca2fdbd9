"""`make lab`: a Jupyter server on loopback with a token lists the paper notebooks over its REST API and
runs a library notebook through the project's kernel (the same kernel JupyterLab users get)."""
import json, os, secrets, socket, subprocess, sys, time, uuid
from pathlib import Path
import nbformat, pytest

ROOT = Path(__file__).resolve().parent.parent

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def server():
    port, token = free_port(), secrets.token_hex(16)
    p = subprocess.Popen([sys.executable, '-m', 'jupyter_server', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                          f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={ROOT}', '--ServerApp.open_browser=False', '--allow-root'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import requests
    base = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try:
            if requests.get(f'{base}/api/status', headers={'Authorization': f'token {token}'}, timeout=2).ok: break
        except requests.ConnectionError: time.sleep(0.5)
    else:
        p.kill(); pytest.fail('jupyter server did not start on loopback within 60 s')
    yield base, token
    p.terminate(); p.wait(timeout=30)

def test_rest_lists_paper_notebooks_and_needs_token(server):
    import requests
    base, token = server
    assert requests.get(f'{base}/api/contents/nbs/paper', timeout=10).status_code == 403
    r = requests.get(f'{base}/api/contents/nbs/paper', headers={'Authorization': f'token {token}'}, timeout=10)
    r.raise_for_status()
    names = {c['name'] for c in r.json()['content']}
    expected = {p.name for p in (ROOT/'nbs'/'paper').glob('*.ipynb')}
    assert expected and expected <= names

def test_kernel_runs_core_notebook(server):
    "Run every code cell of nbs/00_core.ipynb through a kernel started by the server, over its websocket."
    import requests
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect
    base, token = server
    h = {'Authorization': f'token {token}'}
    kid = requests.post(f'{base}/api/kernels', json={'name': 'python3'}, headers=h, timeout=30).json()['id']
    cells = [c.source for c in nbformat.read(ROOT/'nbs'/'00_core.ipynb', as_version=4).cells if c.cell_type == 'code']
    async def run_all():
        ws = await websocket_connect(f"{base.replace('http', 'ws')}/api/kernels/{kid}/channels?token={token}")
        results = []
        for src in cells:
            msg_id = uuid.uuid4().hex
            ws.write_message(json.dumps({'header': {'msg_id': msg_id, 'msg_type': 'execute_request', 'username': 't',
                                                    'session': 's', 'version': '5.3'}, 'parent_header': {}, 'metadata': {},
                                         'content': {'code': src, 'silent': False, 'store_history': True,
                                                     'user_expressions': {}, 'allow_stdin': False}, 'channel': 'shell'}))
            while True:
                m = json.loads(await ws.read_message())
                if m.get('parent_header', {}).get('msg_id') == msg_id and m['msg_type'] == 'execute_reply':
                    results.append(m['content']); break
        ws.close(); return results
    try: results = IOLoop.current().run_sync(run_all, timeout=180)
    finally: requests.delete(f'{base}/api/kernels/{kid}', headers=h, timeout=30)
    errors = [(i, r.get('ename'), r.get('evalue')) for i, r in enumerate(results) if r['status'] != 'ok']
    assert len(results) == len(cells) and not errors, errors
