<?php
// Gatehouse as the service provider: its entity id and ACS URL come from
// the test (SSP_SP_ENTITY_ID, SSP_SP_ACS). The NameID is the user's uid, in
// the persistent format.
$metadata[getenv('SSP_SP_ENTITY_ID')] = [
    'AssertionConsumerService' => [
        [
            'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
            'Location' => getenv('SSP_SP_ACS'),
        ],
    ],
    'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
    'authproc' => [
        10 => [
            'class' => 'saml:AttributeNameID',
            'attribute' => 'uid',
            'Format' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
        ],
    ],
    'validate.authnrequest' => false,
];
