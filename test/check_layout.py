#!/usr/bin/python3
# test/check_layout.py
#
# The layering rules of extension/README.md, checked on the sources: the
# test build (make KEYSMITH_WERROR=1, which the harness uses) runs it and
# fails on a wrong-way include, an include cycle, a header that too many
# files include, or two sources with one basename.
#
#   kms/                  includes only kms/ headers (bare sibling names) and
#                         system headers: never a PostgreSQL header
#   extension/common/     common, kms
#   extension/keys/       keys, common, kms
#   extension/leases/     leases, common, kms
#   extension/secrets/    secrets, keys, common, kms
#   rotator/              rotator, and the module headers of
#                         extension/{secrets,keys,leases,common}, kms
#
# A module is a header, or a .c file with a header of the same name.  A .c
# file with no header of its own is an entry point (SQL-callable functions,
# _PG_init): nothing can include it, so it may include any module.  Project
# headers are included by their path from the top of the tree.
#
# usage: check_layout.py [ROOT]   prints what it finds; exit 1 on a breach.
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..'))
INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^>"]+)[>"]', re.M)

ALLOWED = {
    'extension/common': {'extension/common', 'kms'},
    'extension/keys': {'extension/keys', 'extension/common', 'kms'},
    'extension/leases': {'extension/leases', 'extension/common', 'kms'},
    'extension/secrets': {'extension/secrets', 'extension/keys', 'extension/common', 'kms'},
    'rotator': {'rotator', 'extension/secrets', 'extension/keys', 'extension/leases', 'extension/common', 'kms'},
}
# a header included by more than this share of the files is a missing boundary
MAX_FAN_IN = 1 / 3


def sources():
    for top in ('extension', 'rotator', 'kms'):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for n in sorted(names):
                if n.endswith(('.c', '.h')):
                    yield os.path.relpath(os.path.join(dirpath, n), ROOT)


def folder(path):
    return os.path.dirname(path)


def main():
    files = sorted(sources())
    present = set(files)
    problems = []
    edges = {}                  # file -> project headers it includes
    for f in files:
        text = open(os.path.join(ROOT, f), encoding='utf-8').read()
        text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
        incs = []
        for kind, name in INCLUDE.findall(text):
            if f.startswith('kms/'):
                if kind == '"' and os.path.join('kms', name) in present and '/' not in name:
                    incs.append(os.path.join('kms', name))
                elif kind == '"':
                    problems.append('%s: kms/ includes "%s": kms/ includes only its siblings and system headers' % (f, name))
                elif not name.startswith(('openssl/', 'curl/', 'jansson', 'libpq')) and '/' in name and \
                        not name.startswith(('sys/', 'netinet/', 'arpa/', 'linux/')):
                    problems.append('%s: kms/ includes <%s>' % (f, name))
                continue
            if kind == '"' and name.split('/')[0] in ('extension', 'rotator', 'kms'):
                if name not in present:
                    problems.append('%s: includes "%s", which does not exist' % (f, name))
                incs.append(name)
            elif kind == '"' and os.path.join(folder(f), name) in present:
                problems.append('%s: includes "%s" by a relative name: write it from the top ("%s")'
                                % (f, name, os.path.join(folder(f), name)))
        edges[f] = incs

    def is_module(f):
        return f.endswith('.h') or f[:-2] + '.h' in present

    # wrong-way includes
    for f in files:
        if f.startswith('kms/') or not is_module(f):
            continue
        allowed = ALLOWED.get(folder(f))
        if allowed is None:
            continue            # extension/hooks.h: the top, above every feature
        for h in edges[f]:
            if folder(h) not in allowed:
                problems.append('%s includes %s: %s/ may include only %s'
                                % (f, h, folder(f), ', '.join(sorted(a + '/' for a in allowed))))

    # cycles between modules (a module is X.c with X.h)
    def module(p):
        return p[:-2]
    graph = {}
    for f in files:
        graph.setdefault(module(f), set()).update(module(h) for h in edges[f] if module(h) != module(f))
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                problems.append('include cycle: ' + ' -> '.join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m)

    # fan-in of the glue's headers
    glue = [f for f in files if not f.startswith('kms/')]
    worst = (0, None)
    for h in (f for f in glue if f.endswith('.h')):
        users = [f for f in glue if h in edges[f] and module(f) != module(h)]
        if len(users) > worst[0]:
            worst = (len(users), h)
        if len(users) > MAX_FAN_IN * (len(glue) - 1):
            problems.append('%s is included by %d of %d files: more than a third means a module boundary is missing'
                            % (h, len(users), len(glue) - 1))

    # autodepend writes .deps/<basename>.Po: basenames must be unique
    seen = {}
    for f in files:
        if f.endswith('.c'):
            b = os.path.basename(f)
            if b in seen:
                problems.append('%s and %s share a basename (make autodepend keeps one .deps file per basename)'
                                % (seen[b], f))
            seen[b] = f

    for p in problems:
        print('layout: ' + p)
    print('layout: %d files, %d include edges, most-included header %s (%d of %d files), %d problems'
          % (len(files), sum(len(v) for v in edges.values()), worst[1], worst[0], len(glue) - 1, len(problems)))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
