import json, pathlib
root = pathlib.Path('/tmp/fr15/undo-long-full/steps-40')
def best(rows, pred):
    c = [r for r in rows if r.get('accuracy') is not None and pred(r['attack'])]
    return max(c, key=lambda r: r['accuracy']) if c else None
for seed in sorted(root.glob('seed-*')):
    s = seed / 'summary.json'
    if not s.exists():
        print(seed.name, 'not finished'); continue
    d = json.loads(s.read_text())
    for who, f in (('locked', seed / 'runs.jsonl'), ('base', seed / 'base' / 'runs.jsonl')):
        rows = list({json.loads(l)['key']: json.loads(l) for l in open(f)}.values())
        nonscr = lambda a: not a.startswith('scratch')
        parts = {
            'worst': best(rows, nonscr),
            'finetune': best(rows, lambda a: nonscr(a) and '[' not in a and '+' not in a and not a.startswith('distill')),
            'lora': best(rows, lambda a: nonscr(a) and 'lora' in a),
            'distill': best(rows, lambda a: a.startswith('distill')),
            'transform': best(rows, lambda a: nonscr(a) and '+' in a),
        }
        errs = [r['attack'] for r in rows if r.get('error')]
        print(seed.name, who, len(rows), ' '.join(f"{k}={v['attack']}:{v['accuracy']:.3f}" for k, v in parts.items() if v), 'errors', errs)
    print(seed.name, 'reference', d['reference']['attacker'], round(d['reference']['accuracy'], 3), 'uplift', round(100 * d['uplift'], 1), 'base_uplift', round(100 * d['base_uplift'], 1))
