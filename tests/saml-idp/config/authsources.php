<?php
// The test users of the SAML connector tests (password: "password").
$config = [
    'admin' => ['core:AdminPassword'],
    'test-users' => [
        'exampleauth:UserPass',
        'alice:password' => [
            'uid' => ['alice'],
            'mail' => ['alice@saml.example'],
            'displayName' => ['Alice SAML'],
            'eduPersonAffiliation' => ['member', 'staff'],
            'department' => ['Research'],
        ],
        'bob:password' => [
            'uid' => ['bob'],
            'mail' => ['bob@saml.example'],
            'displayName' => ['Bob SAML'],
            'eduPersonAffiliation' => ['member'],
        ],
    ],
];
