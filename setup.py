"""Packaging for tff-dp.

Install through ./run.sh, which installs the fully pinned, hashed
requirements.lock first and then this package without dependency resolution
(`--no-deps`): tensorflow-federated 0.87.0 pins a jaxlib that is not on every
package index (see requirements/overrides.txt).
"""

import setuptools

setuptools.setup(
    name='tff-dp',
    version='0.1.0',
    description=('Differentially private federated learning on TensorFlow '
                 'Federated: DP-FedAvg, honest epsilon accounting, TensorBoard.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=setuptools.find_packages(include=['tff_dp', 'tff_dp.*']),
    python_requires='>=3.11,<3.12',
    # Loose names only; the exact versions live in requirements.lock.
    install_requires=[
        'tensorflow-federated==0.87.0',
        'dp-accounting==0.4.3',
        'tensorflow-privacy==0.9.0',
        'scikit-learn',
        'absl-py',
    ],
    entry_points={
        'console_scripts': [
            'tff-dp=tff_dp.train:entry_point',
            'tff-dp-epsilon=tff_dp.epsilon:entry_point',
        ],
    },
)
