"""Packaging for tff-dp.

Install through ./run.sh, which installs the fully pinned, hashed
requirements.lock first and then this package without dependency resolution
(`--no-deps`): tensorflow-federated 0.87.0 pins a jaxlib that is not on every
package index (see requirements/overrides.txt).

The one native part, tff_dp/execution/native/loopback_bind.c (an LD_PRELOAD shim that
makes the TFF worker serve on a Unix socket in a private directory instead of
TCP; see tff_dp/execution/runtime.py), is built as an optional extension: without a C
compiler the install still succeeds, and tff-dp refuses to start the worker
unless the caller explicitly allows an unconfined one.
"""

import setuptools

# A plain shared object for LD_PRELOAD, not a Python module: built with the
# extension machinery only so that every install (editable included, where it
# lands next to its source) compiles it.
_LOOPBACK_BIND = setuptools.Extension(
    'tff_dp.execution.native._loopback_bind',
    sources=['tff_dp/execution/native/loopback_bind.c'],
    # dlsym lives in libdl before glibc 2.34 (a stub after).
    libraries=['dl'],
    optional=True,
)

setuptools.setup(
    name='tff-dp',
    version='0.1.0',
    description=(
        'Differentially private federated learning on TensorFlow '
        'Federated: DP-FedAvg, honest epsilon accounting, TensorBoard.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=setuptools.find_packages(include=['tff_dp', 'tff_dp.*']),
    ext_modules=[_LOOPBACK_BIND],
    python_requires='>=3.11,<3.12',
    # Loose names only; the exact versions live in requirements.lock.
    install_requires=[
        'tensorflow-federated==0.87.0',
        'dp-accounting==0.4.3',
        'tensorflow-privacy==0.9.0',
        'scikit-learn',
        'matplotlib',
        'absl-py',
    ],
    entry_points={
        'console_scripts': [
            'tff-dp=tff_dp.cli.launch:train',
            'tff-dp-epsilon=tff_dp.cli.launch:epsilon',
        ],
    },
)
